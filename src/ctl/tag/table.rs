//! Plain-text output of the cluster commands: aligned columns, as kubectl prints them.

/// Items joined by commas, or `-` when there are none.
pub fn or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

pub(super) fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Rows as aligned columns (three spaces apart, the last column unpadded), as kubectl prints.
pub fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_leave_the_last_unpadded() {
        let rows = vec![
            vec!["TAG".to_string(), "REVISION".into(), "NAMESPACES".into()],
            vec!["production".into(), "canary".into(), "-".into()],
        ];
        assert_eq!(
            columns(&rows),
            "TAG          REVISION   NAMESPACES\nproduction   canary     -\n"
        );
    }
}
