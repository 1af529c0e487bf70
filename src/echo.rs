//! Client input quoted back in gRPC messages, logs and debug output, cut to a bounded length.
//!
//! Anything a client sends (node ids, metadata values, versions, NACK messages) may be as
//! long as a request is allowed to be. A message or log line that quotes it shows only its
//! start and says how long it was; state that keeps it keeps a bounded copy. This module
//! only formats and copies: what to refuse is decided where the input is read.

use std::fmt;

/// Longest client input quoted whole in a gRPC message or a log line, in bytes.
pub const ECHO_BYTES: usize = 256;

/// `text` quoted (as `{:?}` would) for a message or log line, cut after [`ECHO_BYTES`]
/// bytes with its full length noted.
pub fn echo(text: &str) -> Echo<'_> {
    echo_max(text, ECHO_BYTES)
}

/// `text` quoted, cut after `max` bytes with its full length noted.
pub fn echo_max(text: &str, max: usize) -> Echo<'_> {
    Echo {
        text,
        max,
        total: text.len(),
    }
}

/// A quoted, bounded view of client input; see [`echo`].
#[derive(Clone, Copy, Debug)]
pub struct Echo<'a> {
    text: &'a str,
    max: usize,
    /// Length of the client's input, when `text` is already a cut copy of it.
    total: usize,
}

impl Echo<'_> {
    /// Reports `total` as the input's length: `text` is a copy already cut from it (see
    /// [`bounded`]).
    pub fn of_total(mut self, total: usize) -> Self {
        self.total = total.max(self.text.len());
        self
    }
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.len() <= self.max && self.total == self.text.len() {
            write!(f, "{:?}", self.text)
        } else {
            let start = &self.text[..char_floor(self.text, self.max)];
            write!(f, "{start:?}... ({} bytes)", self.total)
        }
    }
}

/// A copy of `text` to keep, cut after `max` bytes (at a character boundary) and marked
/// with its full length when it was longer.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    format!(
        "{}... ({} bytes)",
        &text[..char_floor(text, max)],
        text.len()
    )
}

/// The start of `text`: at most `max` bytes, cut at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    &text[..char_floor(text, max)]
}

/// The largest character boundary of `text` at or below `at`.
fn char_floor(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole_and_long_input_is_cut_with_its_length() {
        assert_eq!(echo("node-1").to_string(), "\"node-1\"");
        let long = "x".repeat(1 << 20);
        let shown = echo(&long).to_string();
        assert!(shown.len() < ECHO_BYTES + 32, "{}", shown.len());
        assert!(shown.ends_with("... (1048576 bytes)"), "{shown}");
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcd", 3), "abc... (4 bytes)");
        let kept = bounded(&long, 100);
        let shown = echo_max(&kept, 10).of_total(long.len()).to_string();
        assert_eq!(shown, "\"xxxxxxxxxx\"... (1048576 bytes)");
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // 'é' is two bytes: a cut in its middle moves before it.
        assert_eq!(bounded("aé", 2), "a... (3 bytes)");
        assert_eq!(echo_max("éé", 3).to_string(), "\"é\"... (4 bytes)");
    }
}
