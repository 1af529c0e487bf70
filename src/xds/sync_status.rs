//! What CSDS and `revplane proxy-status` say of one resource type of one proxy, derived from
//! the stream state the registry copies ([`TypeStatus`]).
//!
//! Pure: no locks, no gRPC. The stream state decides; this only names the outcome, in
//! revplane's words ([`SyncStatus`]) and in Envoy's (`ConfigStatus`, `ClientResourceStatus`).

use std::fmt;

use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::service::status::v3::ConfigStatus;
use serde::Serialize;

use super::proxies::TypeStatus;

/// Where one resource type of one proxy stands, as the control plane sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncStatus {
    /// The last response sent was acknowledged (acked version = sent version).
    Synced,
    /// A newer response was sent and is not answered yet.
    Stale,
    /// The last response was rejected (NACK); the proxy keeps its previous config.
    Nacked,
    /// Nothing of this type was sent (not requested, or nothing to send).
    NotSent,
    /// The server did not say (a CSDS server other than revplane).
    Unknown,
}

impl SyncStatus {
    /// The status of a type from its registry copy; `None` when the type was never requested.
    pub fn of(status: Option<&TypeStatus>) -> SyncStatus {
        let Some(t) = status else {
            return SyncStatus::NotSent;
        };
        match &t.sent_version {
            None => SyncStatus::NotSent,
            Some(_) if t.pending => SyncStatus::Stale,
            Some(_) if t.last_nack.is_some() => SyncStatus::Nacked,
            Some(sent) if t.acked_version.as_ref() == Some(sent) => SyncStatus::Synced,
            // Answered by an ACK naming another version than was sent: not in sync.
            Some(_) => SyncStatus::Stale,
        }
    }

    /// The word shown in tables and JSON: `SYNCED`, `STALE`, `NACKED`, `NOT SENT`, `UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Stale => "STALE",
            SyncStatus::Nacked => "NACKED",
            SyncStatus::NotSent => "NOT SENT",
            SyncStatus::Unknown => "UNKNOWN",
        }
    }

    /// Envoy's name for it in CSDS (`GenericXdsConfig.config_status`).
    pub fn config_status(self) -> ConfigStatus {
        match self {
            SyncStatus::Synced => ConfigStatus::Synced,
            SyncStatus::Stale => ConfigStatus::Stale,
            SyncStatus::Nacked => ConfigStatus::Error,
            SyncStatus::NotSent => ConfigStatus::NotSent,
            SyncStatus::Unknown => ConfigStatus::Unknown,
        }
    }

    /// The status a CSDS `config_status` names.
    pub fn from_config_status(status: ConfigStatus) -> SyncStatus {
        match status {
            ConfigStatus::Synced => SyncStatus::Synced,
            ConfigStatus::Stale => SyncStatus::Stale,
            ConfigStatus::Error => SyncStatus::Nacked,
            ConfigStatus::NotSent => SyncStatus::NotSent,
            ConfigStatus::Unknown => SyncStatus::Unknown,
        }
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SyncStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// CSDS `client_status`: what the proxy last said about the type. `ACKED` or `NACKED` after
/// its last answer, `REQUESTED` when it asked and never answered a response, `UNKNOWN` when
/// it never asked.
pub fn client_status(status: Option<&TypeStatus>) -> ClientResourceStatus {
    match status {
        None => ClientResourceStatus::Unknown,
        Some(t) if t.last_nack.is_some() => ClientResourceStatus::Nacked,
        Some(t) if t.acked_version.is_some() => ClientResourceStatus::Acked,
        Some(_) => ClientResourceStatus::Requested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ResourceType, Snapshot};
    use crate::xds::state::{RequestView, Response, StreamState};

    const CDS: ResourceType = ResourceType::Cluster;
    const EDS: ResourceType = ResourceType::Endpoint;

    fn snap(serial: u64, clusters: &[(&str, &str)]) -> Snapshot {
        let list = clusters
            .iter()
            .map(|(name, body)| (name.to_string(), body.as_bytes().to_vec()))
            .collect();
        Snapshot::from_encoded(serial, vec![(CDS, list), (EDS, Vec::new())])
    }

    /// The status CSDS reports for `kind`, through the registry copy as the server does.
    fn status(st: &StreamState, kind: ResourceType) -> (SyncStatus, ClientResourceStatus) {
        let t = st.get(kind);
        let copy = t.requested.then(|| TypeStatus::from(t));
        (SyncStatus::of(copy.as_ref()), client_status(copy.as_ref()))
    }

    fn answer(st: &mut StreamState, r: &Response, error: Option<&str>) {
        let view = RequestView {
            version: if error.is_some() { "" } else { &r.version },
            nonce: &r.nonce,
            names: &[],
            same_names: false,
            error,
        };
        st.on_request(r.kind, &view);
    }

    #[test]
    fn each_status_follows_the_stream_state() {
        let mut st = StreamState::default();
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::NotSent, ClientResourceStatus::Unknown),
            "never requested"
        );

        st.on_request(CDS, &RequestView::default());
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::NotSent, ClientResourceStatus::Requested),
            "requested, nothing sent yet"
        );

        let v1 = st.response_for(CDS, &snap(1, &[("a", "1")]), true).unwrap();
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::Stale, ClientResourceStatus::Requested),
            "sent, not answered"
        );

        answer(&mut st, &v1, None);
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::Synced, ClientResourceStatus::Acked),
            "acked = sent"
        );
        let t = TypeStatus::from(st.get(CDS));
        assert_eq!(t.acked_version, t.sent_version);

        let v2 = st
            .response_for(CDS, &snap(2, &[("a", "2")]), false)
            .unwrap();
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::Stale, ClientResourceStatus::Acked),
            "a newer response unanswered; the proxy still holds the older one"
        );

        answer(&mut st, &v2, Some("unknown cluster type"));
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::Nacked, ClientResourceStatus::Nacked)
        );
        let nack = TypeStatus::from(st.get(CDS)).last_nack.unwrap();
        assert_eq!(nack.message, "unknown cluster type");
        assert_eq!(nack.rejected_version, v2.version, "the version rejected");
        assert_eq!(nack.nonce, v2.nonce);

        let v3 = st
            .response_for(CDS, &snap(3, &[("a", "3")]), false)
            .unwrap();
        assert_eq!(
            status(&st, CDS).0,
            SyncStatus::Stale,
            "a newer response after a NACK is STALE until answered"
        );
        assert!(
            TypeStatus::from(st.get(CDS)).last_nack.is_some(),
            "the NACK stays visible"
        );

        // A request with an old nonce says nothing about the latest response.
        answer(&mut st, &v1, None);
        assert_eq!(status(&st, CDS).0, SyncStatus::Stale);

        answer(&mut st, &v3, None);
        assert_eq!(
            status(&st, CDS),
            (SyncStatus::Synced, ClientResourceStatus::Acked)
        );
        assert!(TypeStatus::from(st.get(CDS)).last_nack.is_none());
        assert_eq!(
            status(&st, EDS).0,
            SyncStatus::NotSent,
            "other types unaffected"
        );
    }

    #[test]
    fn an_ack_naming_another_version_is_not_synced() {
        let t = TypeStatus {
            sent_version: Some("v2".into()),
            acked_version: Some("v1".into()),
            ..Default::default()
        };
        assert_eq!(SyncStatus::of(Some(&t)), SyncStatus::Stale);
    }

    #[test]
    fn envoy_names_round_trip() {
        for s in [
            SyncStatus::Synced,
            SyncStatus::Stale,
            SyncStatus::Nacked,
            SyncStatus::NotSent,
            SyncStatus::Unknown,
        ] {
            assert_eq!(SyncStatus::from_config_status(s.config_status()), s);
        }
        assert_eq!(SyncStatus::Nacked.config_status(), ConfigStatus::Error);
        assert_eq!(
            serde_json::to_string(&SyncStatus::NotSent).unwrap(),
            "\"NOT SENT\""
        );
    }
}
