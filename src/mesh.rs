//! A revision's mesh config: the settings that shape what it serves (DESIGN.md §1).
//!
//! Each revision reads its own ConfigMap `revplane-<revision>` (key `mesh`, YAML), so a change
//! there canaries a config change without touching the other revision. This module holds the
//! validated domain type and the namespace-selector logic; parsing lives in
//! `source::convert`, so both sources read the ConfigMap by the same rules.

use std::collections::BTreeMap;
use std::time::Duration;

/// Settings of one revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    /// Cluster DNS domain (`cluster.local`).
    pub domain: String,
    /// Upstream connect timeout of every cluster.
    pub connect_timeout: Duration,
    /// Load-balancing policy of every cluster.
    pub lb_policy: LbPolicy,
    /// Namespaces whose services this revision serves; empty means all namespaces.
    pub discovery_selectors: Vec<LabelSelector>,
    /// What the injector gives each sidecar of this revision.
    pub sidecar: SidecarConfig,
    /// How sidecars get their outbound traffic when their node metadata does not say
    /// (`interceptionMode`); read per proxy, not by translation.
    pub interception: InterceptionMode,
}

/// How a sidecar's outbound traffic reaches Envoy (mesh config key `interceptionMode`, node
/// metadata `INTERCEPTION_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InterceptionMode {
    /// iptables redirects outbound connections to `virtualOutbound` on 15001 (Istio's default).
    #[default]
    Redirect,
    /// Nothing redirects: applications dial listeners bound on `127.0.0.1:<port>`.
    None,
}

impl InterceptionMode {
    /// The mode named `text` as Istio spells it (`REDIRECT`, `NONE`); `None` for anything else.
    pub fn parse(text: &str) -> Option<InterceptionMode> {
        match text {
            "REDIRECT" => Some(InterceptionMode::Redirect),
            "NONE" => Some(InterceptionMode::None),
            _ => None,
        }
    }
}

/// The sidecar the injector adds to a pod (mesh config keys `discoveryAddress`, `proxyImage`,
/// `proxyResources`, `proxyAdminPort`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SidecarConfig {
    /// `host:port` the sidecar dials for xDS; `None`: this revision's Service,
    /// `revplane-<rev>.<namespace>.svc:15010`.
    pub discovery_address: Option<String>,
    /// Container image of the sidecar (an Envoy 1.40 image).
    pub image: String,
    /// Resource requests and limits of the sidecar container.
    pub resources: ProxyResources,
    /// Port of the sidecar's Envoy admin interface on 127.0.0.1 (0: any free port).
    pub admin_port: u16,
}

/// Default sidecar image.
pub const DEFAULT_PROXY_IMAGE: &str = "docker.io/envoyproxy/envoy:v1.40.0";

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            discovery_address: None,
            image: DEFAULT_PROXY_IMAGE.to_string(),
            resources: ProxyResources::default(),
            admin_port: 15000,
        }
    }
}

/// Kubernetes resource quantities of the sidecar container, by resource name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProxyResources {
    /// `requests` (e.g. `cpu: 100m`, `memory: 128Mi`).
    pub requests: BTreeMap<String, String>,
    /// `limits`.
    pub limits: BTreeMap<String, String>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            domain: "cluster.local".to_string(),
            connect_timeout: Duration::from_secs(1),
            lb_policy: LbPolicy::RoundRobin,
            discovery_selectors: Vec::new(),
            sidecar: SidecarConfig::default(),
            interception: InterceptionMode::Redirect,
        }
    }
}

impl MeshConfig {
    /// What translation reads (everything but the sidecar settings and the interception
    /// default, which are read per pod or per proxy), to hash as an input of every cluster: a
    /// new sidecar image must not re-translate the catalog.
    pub fn translation_inputs(&self) -> impl std::hash::Hash + '_ {
        (
            &self.domain,
            self.connect_timeout,
            self.lb_policy,
            &self.discovery_selectors,
        )
    }

    /// Whether a namespace with `labels` is admitted by the discovery selectors
    /// (`None`: the namespace object is not known).
    pub fn admits(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.discovery_selectors.is_empty() {
            return true;
        }
        labels.is_some_and(|labels| self.discovery_selectors.iter().any(|s| s.matches(labels)))
    }
}

/// Load-balancing policies a mesh config may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbPolicy {
    /// Round robin.
    RoundRobin,
    /// Least request.
    LeastRequest,
    /// Random.
    Random,
}

/// A Kubernetes label selector: every `match_labels` pair and every expression must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Exact label values.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    pub match_expressions: Vec<Requirement>,
}

/// One set-based requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// The label's value is one of these.
    In(String, Vec<String>),
    /// The label is absent or its value is none of these.
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| match r {
                Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
                Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let s = LabelSelector {
            match_labels: labels(&[("istio.io/rev", "canary")]),
            match_expressions: vec![
                Requirement::In("env".into(), vec!["prod".into(), "staging".into()]),
                Requirement::NotIn("tier".into(), vec!["batch".into()]),
                Requirement::DoesNotExist("legacy".into()),
            ],
        };
        assert!(s.matches(&labels(&[("istio.io/rev", "canary"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("istio.io/rev", "stable"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("istio.io/rev", "canary"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[
            ("istio.io/rev", "canary"),
            ("env", "prod"),
            ("tier", "batch")
        ])));
        assert!(!s.matches(&labels(&[
            ("istio.io/rev", "canary"),
            ("env", "prod"),
            ("legacy", "")
        ])));
        let exists = LabelSelector {
            match_expressions: vec![Requirement::Exists("team".into())],
            ..Default::default()
        };
        assert!(exists.matches(&labels(&[("team", "")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn no_selectors_admit_every_namespace_even_unknown_ones() {
        let mut mesh = MeshConfig::default();
        assert!(mesh.admits(None));
        mesh.discovery_selectors = vec![LabelSelector {
            match_labels: labels(&[("mesh", "on")]),
            ..Default::default()
        }];
        assert!(
            !mesh.admits(None),
            "an unknown namespace is not admitted by selectors"
        );
        assert!(mesh.admits(Some(&labels(&[("mesh", "on")]))));
        assert!(!mesh.admits(Some(&labels(&[]))));
    }
}
