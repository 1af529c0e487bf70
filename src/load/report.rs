//! Load-run results: what happened, reduced to the figures an operator compares.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// p50 / p99 / max of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Spread {
    /// The spread of `samples` (empty: all zero).
    pub fn of(samples: &[Duration]) -> Spread {
        if samples.is_empty() {
            return Spread::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Spread {
            count: ms.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// The ACKs of one config version (one type URL, one `version_info`) across proxies.
#[derive(Clone, Debug, Serialize)]
pub struct VersionReport {
    /// `cds`, `eds`, or the type URL when unknown.
    pub r#type: String,
    /// `version_info`.
    pub version: String,
    /// Proxies that ACKed it.
    pub acks: usize,
    /// Unix time (ms) of the first ACK.
    pub first_ack_unix_ms: u128,
    /// Unix time (ms) of the last ACK.
    pub last_ack_unix_ms: u128,
    /// ACK times after the first ACK: the fan-out convergence.
    pub convergence: Spread,
    /// Every ACK's Unix time (ms, to the microsecond), in the order they came; only with
    /// `--ack-times` (a distribution to plot, 10,000 numbers per version at 10,000 proxies).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ack_unix_ms: Vec<f64>,
}

impl VersionReport {
    /// The report of one version from its ACK times (at least one), keeping every time when
    /// `keep_times`.
    pub fn of(r#type: String, version: String, times: &[SystemTime], keep_times: bool) -> Self {
        let first = *times.iter().min().expect("at least one ACK");
        let last = *times.iter().max().expect("at least one ACK");
        let after: Vec<Duration> = times
            .iter()
            .map(|t| t.duration_since(first).unwrap_or_default())
            .collect();
        let unix = |t: &SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        VersionReport {
            r#type,
            version,
            acks: times.len(),
            first_ack_unix_ms: unix(&first).as_millis(),
            last_ack_unix_ms: unix(&last).as_millis(),
            convergence: Spread::of(&after),
            ack_unix_ms: if keep_times {
                times
                    .iter()
                    .map(|t| unix(t).as_micros() as f64 / 1000.0)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// Everything a load run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Proxies simulated.
    pub proxies: usize,
    /// Streams that received at least one response.
    pub streams_opened: usize,
    /// Streams refused or ended, by gRPC status code name.
    pub streams_refused: BTreeMap<String, usize>,
    /// The first such stream's status message, by code name.
    pub streams_refused_first_message: BTreeMap<String, String>,
    /// The largest request a proxy sent, in bytes on the wire (with its gRPC prefix): on
    /// a catalog of many services, an EDS ACK naming every assignment.
    pub largest_request_bytes: usize,
    /// Streams that ended for other reasons (connect failures, ...), by reason.
    pub streams_failed: BTreeMap<String, usize>,
    /// From stream start to a full config (CDS and the EDS of every cluster) ACKed.
    pub first_full_config: Spread,
    /// One row per config version observed, in order of first ACK.
    pub versions: Vec<VersionReport>,
    /// Responses received in all.
    pub responses: u64,
    /// Their bytes in all (messages without their gRPC prefixes).
    pub response_bytes: u64,
    /// Streams closed on the reconnect schedule (each followed by a new one).
    pub reconnects: usize,
    /// Wall-clock length of the run.
    pub duration_ms: u128,
}

impl LoadReport {
    /// The human table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let refused: usize = self.streams_refused.values().sum();
        out.push_str(&format!(
            "proxies {}   opened {}   refused {}   failed {}   responses {} ({:.1} MB)   reconnects {}   run {:.1} s\n",
            self.proxies,
            self.streams_opened,
            refused,
            self.streams_failed.values().sum::<usize>(),
            self.responses,
            self.response_bytes as f64 / 1e6,
            self.reconnects,
            self.duration_ms as f64 / 1000.0
        ));
        for (code, n) in &self.streams_refused {
            out.push_str(&format!("  refused with {code}: {n}"));
            match self.streams_refused_first_message.get(code) {
                Some(message) if !message.is_empty() => {
                    out.push_str(&format!(" (the first: {message})\n"))
                }
                _ => out.push('\n'),
            }
        }
        for (why, n) in &self.streams_failed {
            out.push_str(&format!("  failed ({why}): {n}\n"));
        }
        let f = &self.first_full_config;
        out.push_str(&format!(
            "time to first full config (ms): p50 {:.1}  p99 {:.1}  max {:.1}  (n={})\n",
            f.p50_ms, f.p99_ms, f.max_ms, f.count
        ));
        if !self.versions.is_empty() {
            out.push_str("fan-out per version (ms after the first ACK):\n");
            out.push_str("  type  version           acks     p50      p99      max\n");
            for v in &self.versions {
                out.push_str(&format!(
                    "  {:<5} {:<16} {:>6} {:>8.1} {:>8.1} {:>8.1}\n",
                    v.r#type,
                    v.version,
                    v.acks,
                    v.convergence.p50_ms,
                    v.convergence.p99_ms,
                    v.convergence.max_ms
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Spread::of(&samples);
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Spread::of(&[]), Spread::default());
        assert_eq!(Spread::of(&[Duration::from_millis(7)]).p99_ms, 7.0);
    }

    #[test]
    fn version_keeps_every_ack_time_only_when_asked() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_micros(ms * 1000 + 250);
        let times = [at(1_000_030), at(1_000_010), at(1_000_020)];
        let v = VersionReport::of("eds".into(), "v1".into(), &times, true);
        assert_eq!(
            (v.first_ack_unix_ms, v.last_ack_unix_ms),
            (1_000_010, 1_000_030)
        );
        assert_eq!((v.convergence.p50_ms, v.convergence.max_ms), (10.0, 20.0));
        assert_eq!(v.ack_unix_ms, [1_000_030.25, 1_000_010.25, 1_000_020.25]);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["ack_unix_ms"][1], 1_000_010.25);

        let v = VersionReport::of("eds".into(), "v1".into(), &times, false);
        assert!(v.ack_unix_ms.is_empty());
        assert!(serde_json::to_value(&v)
            .unwrap()
            .get("ack_unix_ms")
            .is_none());
    }
}
