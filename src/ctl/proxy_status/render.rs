//! Text output of `revplane proxy-status`: the table of every proxy, and one proxy's detail.
//! Pure string building; JSON is the serde form of [`super::Report`].

use std::time::{Duration, SystemTime};

use super::{ProxyReport, TypeReport};

/// Shown for a value that is not known or not set.
const NONE: &str = "-";

/// One row per proxy: NAME, REVISION, CDS, EDS, LDS, RDS, INSTANCE, VERSION.
pub fn table(proxies: &[ProxyReport]) -> String {
    let mut rows = vec![[
        "NAME", "REVISION", "CDS", "EDS", "LDS", "RDS", "INSTANCE", "VERSION",
    ]
    .map(str::to_string)
    .to_vec()];
    for p in proxies {
        let mut row = vec![p.name.clone(), or_none(&p.revision)];
        row.extend(p.types.iter().map(|t| t.status.to_string()));
        row.extend([p.instance.clone(), or_none(&p.version)]);
        rows.push(row);
    }
    columns(&rows)
}

/// Each proxy in detail: identity, then per type status, versions and nonce, then NACKs.
pub fn details(proxies: &[ProxyReport]) -> String {
    proxies.iter().map(detail).collect::<Vec<_>>().join("\n")
}

fn detail(p: &ProxyReport) -> String {
    let version = p
        .version
        .as_deref()
        .map_or_else(String::new, |v| format!(" (revplane {v})"));
    let identity = [
        ["NAME:", p.name.as_str()],
        ["NODE:", p.node_id.as_str()],
        ["REVISION:", p.revision.as_deref().unwrap_or(NONE)],
        [
            "SERVICE ACCOUNT:",
            p.service_account.as_deref().unwrap_or(NONE),
        ],
        ["INSTANCE:", &format!("{}{version}", p.instance)],
    ];
    let mut out = columns(&identity.map(|r| r.map(str::to_string).to_vec()));
    out.push('\n');
    let mut rows = vec![["TYPE", "STATUS", "SENT", "ACKED", "NONCE"]
        .map(str::to_string)
        .to_vec()];
    for t in &p.types {
        rows.push(vec![
            t.kind.to_uppercase(),
            t.status.to_string(),
            or_none(&t.sent_version),
            or_none(&t.acked_version),
            or_none(&t.nonce),
        ]);
    }
    out.push_str(&columns(&rows));
    for t in &p.types {
        out.push_str(&nack(t));
    }
    out
}

fn nack(t: &TypeReport) -> String {
    let Some(n) = &t.last_nack else {
        return String::new();
    };
    let at =
        n.at.and_then(|s| u64::try_from(s).ok())
            .map(|s| {
                let time = SystemTime::UNIX_EPOCH + Duration::from_secs(s);
                format!(" at {}", humantime::format_rfc3339_seconds(time))
            })
            .unwrap_or_default();
    format!(
        "\n{} last NACK (rejected version {}{at}):\n  {}\n",
        t.kind.to_uppercase(),
        if n.rejected_version.is_empty() {
            NONE
        } else {
            &n.rejected_version
        },
        n.message.replace('\n', "\n  ")
    )
}

fn or_none(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| NONE.to_string())
}

/// Left-aligned columns two spaces apart, no trailing spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::sample;
    use super::super::Report;
    use super::*;

    #[test]
    fn one_aligned_row_per_proxy_with_status_per_type() {
        let mut other = sample(None);
        other.instance = "10.0.0.9:15010".into();
        let text = table(&[sample(Some("web-1")), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "REVISION", "CDS", "EDS", "LDS", "RDS", "INSTANCE", "VERSION"]
        );
        assert!(
            lines[1].starts_with("web-1.shop  ")
                && lines[1].contains(
                    "  canary    NACKED  SYNCED  NOT SENT  NOT SENT  127.0.0.1:15010  0.1.0"
                ),
            "{text}"
        );
        assert!(
            lines[2].starts_with("sidecar~10.0.0.1~web-1.shop~"),
            "{text}"
        );
        let at = |l: &str| {
            l.find("INSTANCE")
                .or_else(|| l.find("127.0.0.1").or(l.find("10.0.0.9")))
        };
        assert_eq!(at(lines[0]), at(lines[1]), "columns aligned:\n{text}");
        assert_eq!(at(lines[0]), at(lines[2]), "columns aligned:\n{text}");
        assert_eq!(table(&[]).lines().count(), 1, "the header alone");
    }

    #[test]
    fn the_detail_shows_versions_nonce_and_the_nack_message() {
        let text = details(&[sample(Some("web-1"))]);
        for part in [
            "NAME:             web-1.shop",
            "NODE:             sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local",
            "SERVICE ACCOUNT:  web",
            "INSTANCE:         127.0.0.1:15010 (revplane 0.1.0)",
            "CDS   NACKED    c2    c1     4",
            "EDS   SYNCED    e1    e1     2",
            "LDS   NOT SENT  -     -      -",
            "CDS last NACK (rejected version c2 at 2023-11-14T22:13:20Z):\n  unknown cluster type",
        ] {
            assert!(text.contains(part), "{part:?} missing from:\n{text}");
        }
    }

    #[test]
    fn json_holds_the_same_as_the_table() {
        let report = Report {
            instances: vec![],
            proxies: vec![sample(Some("web-1"))],
        };
        let v = serde_json::to_value(&report).unwrap();
        let p = &v["proxies"][0];
        assert_eq!(p["name"], "web-1.shop");
        assert_eq!(p["revision"], "canary");
        assert_eq!(p["instance"], "127.0.0.1:15010");
        assert_eq!(p["version"], "0.1.0");
        assert_eq!(p["types"]["cds"]["status"], "NACKED");
        assert_eq!(
            p["types"]["cds"]["last_nack"]["message"],
            "unknown cluster type"
        );
        assert_eq!(p["types"]["eds"]["status"], "SYNCED");
        assert_eq!(p["types"]["rds"]["status"], "NOT SENT");
    }
}
