//! Bounded YAML: text nested too deeply is refused before `serde_yaml_ng` reads it.
//!
//! `serde_yaml_ng` (libyaml) reads a whole document into memory before it checks nesting,
//! and a deeply nested flow mapping costs it time that grows with the square of the depth
//! (20,000 levels of `{a: ` took 2.6 s; one 200 KB file held the server for 40 s). [`check`]
//! walks the same text with a streaming parser (granit-parser) that stops at [`MAX_DEPTH`],
//! in time linear in the input, so only text that passes reaches `serde_yaml_ng`. Every
//! source reads untrusted YAML (manifest files, the mesh config) through here.
//!
//! This module only refuses; what a document means is decided by `serde_yaml_ng` as before.

use granit_parser::{Event, Parser, ScanError, StrInput};

/// Deepest nesting of mappings and sequences accepted. A Kubernetes object needs a few
/// dozen at most; `serde_yaml_ng` itself stops at 128.
pub const MAX_DEPTH: usize = 128;

/// Why a YAML text was refused, and in which document (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Index of the document the problem is in.
    pub document: usize,
    /// What is wrong and what to do.
    pub reason: String,
}

/// Checks that `text` is YAML nested at most [`MAX_DEPTH`] deep, in time linear in its
/// length. A syntax error is refused too: the text after it was not checked.
pub fn check(text: &str) -> Result<(), Refusal> {
    let mut options = granit_parser::Options::default();
    options.emit_comments = false;
    // The scanner counts flow levels ahead of the events; both stop a little past our limit
    // so the message below is the one given.
    options.flow_nesting_limit = MAX_DEPTH + 1;
    options.block_nesting_limit = MAX_DEPTH + 1;
    let mut documents = 0usize;
    let mut depth = 0usize;
    for item in Parser::with_options(StrInput::new(text), options) {
        let document = documents.saturating_sub(1);
        let (event, span) = item.map_err(|e| refusal(document, &e))?;
        match event {
            Event::DocumentStart(..) => documents += 1,
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(document, span.start.line(), span.start.col()));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `text` might nest deeper than [`MAX_DEPTH`], so that [`check`] must walk it.
///
/// Every level opens with a byte of `[`, `{` (flow collections), `-` (block sequence entry),
/// `:` or `?` (mapping keys); a text with at most [`MAX_DEPTH`] of them cannot nest deeper.
/// Counting them is a tenth of the cost of walking a small manifest, which is what a large
/// directory is made of; its syntax errors are then found by `serde_yaml_ng`, which reads
/// such a text in linear time.
pub fn may_nest_too_deep(text: &str) -> bool {
    text.bytes()
        .filter(|b| matches!(b, b'[' | b'{' | b'-' | b':' | b'?'))
        .nth(MAX_DEPTH)
        .is_some()
}

/// [`check`], then `serde_yaml_ng::from_str`: one document into `T`.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    check(text).map_err(|r| r.reason)?;
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

fn refusal(document: usize, e: &ScanError) -> Refusal {
    let at = e.marker();
    if matches!(e.kind(), granit_parser::ErrorKind::RecursionLimitExceeded) {
        return too_deep(document, at.line(), at.col());
    }
    Refusal {
        document,
        reason: format!(
            "not valid YAML: {} at line {} column {}",
            e.info(),
            at.line(),
            at.col() + 1
        ),
    }
}

fn too_deep(document: usize, line: usize, col: usize) -> Refusal {
    Refusal {
        document,
        reason: format!(
            "nested more than {MAX_DEPTH} levels deep (line {line}, column {}); refused unread: \
             a Kubernetes object needs far fewer, so this file is probably not what you meant",
            col + 1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_manifests_pass_and_depth_is_counted_per_level() {
        check("a: [1, {b: c}]\n---\n- x\n- {y: [z]}\n").unwrap();
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        check(&nested(MAX_DEPTH)).unwrap();
        let refused = check(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(
            refused.reason.contains("nested more than 128"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_deep_document_is_refused_at_once_and_named() {
        // The attack: 100,000 levels of flow mappings, 400 KB; serde_yaml_ng alone takes
        // minutes on it.
        let text = format!(
            "a: 1\n---\n{}{}",
            "{a: ".repeat(100_000),
            "}".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let refused = check(&text).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        assert_eq!(refused.document, 1, "{refused:?}");
        assert!(refused.reason.contains("line 3"), "{refused:?}");
        // Block nesting (`- - - -`) too.
        let block = format!("{}x\n", "- ".repeat(100_000));
        assert!(check(&block)
            .unwrap_err()
            .reason
            .contains("nested more than"));
    }

    #[test]
    fn only_texts_with_enough_openers_may_nest_too_deep() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!may_nest_too_deep(&nested(MAX_DEPTH)));
        assert!(may_nest_too_deep(&nested(MAX_DEPTH + 1)));
        let block = format!("{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(may_nest_too_deep(&block));
        let mappings: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        assert!(may_nest_too_deep(&mappings));
        assert!(!may_nest_too_deep("kind: Service\nmetadata: {name: web}\n"));
    }

    #[test]
    fn syntax_errors_say_where() {
        let refused = check("a: 1\n---\nb: [\n").unwrap_err();
        assert_eq!(refused.document, 1);
        assert!(refused.reason.starts_with("not valid YAML"), "{refused:?}");
        assert!(from_str::<serde_yaml_ng::Value>("{a: ").is_err());
        assert_eq!(
            from_str::<serde_yaml_ng::Value>("a: 1").unwrap()["a"],
            serde_yaml_ng::Value::from(1)
        );
    }
}
