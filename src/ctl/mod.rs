//! Operator commands, as opposed to `revplane serve` itself: `revplane proxy-status` asks
//! running instances over CSDS; `revplane tag ...` and `revplane revision list` read and write
//! the Kubernetes API server (DESIGN.md §6).
//!
//! Each command owns one module: its flags (clap derive), what it asks, and how it prints the
//! answer. They use published protocols (CSDS, the Kubernetes API), never a server's
//! internals, and never change what a revision serves.

pub mod proxy_status;
pub mod revision;
pub mod tag;
