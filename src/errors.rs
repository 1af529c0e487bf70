//! An error and its causes as one line, for logs and command output.

use std::error::Error;

/// `e`'s message followed by each cause's that it does not already contain.
pub fn chain(e: &dyn Error) -> String {
    with_causes(e.to_string(), e.source())
}

/// `text` followed by the message of `source` and each of its causes, skipping any that
/// `text` already contains (many errors repeat their cause in their own message).
pub fn with_causes(mut text: String, mut source: Option<&dyn Error>) -> String {
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_follows_once() {
        let reset = Wrapped("connection reset", None);
        let body = Wrapped("body error: connection reset", Some(Box::new(reset)));
        let outer = Wrapped("transport error", Some(Box::new(body)));
        assert_eq!(
            chain(&outer),
            "transport error: body error: connection reset"
        );
        assert_eq!(
            with_causes("stream lost".into(), outer.source()),
            "stream lost: body error: connection reset"
        );
    }
}
