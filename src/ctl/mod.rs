//! Operator commands that read and write the Kubernetes API server rather than serve xDS:
//! `revplane tag ...` and `revplane revision list` (DESIGN.md §6).
//!
//! They never touch a running revision's state; they see what every revision sees, through
//! the API server.

pub mod revision;
pub mod tag;
