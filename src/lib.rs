//! revplane: an xDS control plane whose revisions run side by side.
//!
//! ```text
//!  source (manifest dir | kube)        pure, synchronous           immutable, shared
//!  ───────────────────────────► catalog ──► translate ──► Snapshot (Arc) ──► xDS streams ──► proxies
//!   Namespaces, Services,        index      Service→Cluster  per type:        one task per stream:
//!   EndpointSlices               apply/     Slices→CLA       name→(version,   revision gate, SotW
//!                                delete/                      encoded bytes)   state, ACK/NACK
//!                                reset                        via watch
//! ```
//!
//! Each running instance serves exactly one [`revision::Revision`] and refuses proxies of any
//! other with a clear gRPC status.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod ctl;
pub mod echo;
pub mod errors;
pub mod inject;
pub mod load;
pub mod mesh;
pub mod pipeline;
pub mod readiness;
pub mod revision;
pub mod snapshot;
pub mod source;
pub mod translate;
pub mod xds;
