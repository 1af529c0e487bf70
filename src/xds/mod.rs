//! The xDS protocol: revision-gated ADS streams fed from the published snapshot.
//!
//! One task per stream ([`stream`]) selects over requests, snapshot changes and shutdown; the
//! protocol rules live in the pure [`state`] module. This module must not reach back into
//! sources, the catalog or translation: it only reads snapshots.

pub mod state;
