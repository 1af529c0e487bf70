//! Operator commands that talk to running instances or the API server, as opposed to
//! `revplane serve` itself.
//!
//! Each command owns one module: its flags (clap derive), what it asks, and how it prints
//! the answer. They use the server's published protocols (CSDS, the Kubernetes API) and
//! never its internals.

pub mod proxy_status;
