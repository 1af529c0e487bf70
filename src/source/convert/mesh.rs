//! A revision's mesh config as written in its ConfigMap `revplane-<revision>` (key `mesh`,
//! Istio-style camelCase YAML), read into [`MeshConfig`] with every value checked: an invalid
//! config is refused whole, never half applied.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;

use super::ObjectError;
use crate::mesh::{
    InterceptionMode, LabelSelector, LbPolicy, MeshConfig, ProxyResources, Requirement,
};
use crate::revision::Revision;

/// Key of the mesh config YAML in the ConfigMap.
pub const MESH_KEY: &str = "mesh";

/// Name of the ConfigMap holding a revision's mesh config.
pub fn mesh_config_map_name(revision: &Revision) -> String {
    format!("revplane-{revision}")
}

/// The mesh config as written in the ConfigMap (Istio-style camelCase YAML).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMesh {
    domain: Option<String>,
    connect_timeout: Option<String>,
    lb_policy: Option<String>,
    discovery_selectors: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>>,
    discovery_address: Option<String>,
    proxy_image: Option<String>,
    proxy_resources: Option<RawResources>,
    proxy_admin_port: Option<u16>,
    interception_mode: Option<String>,
}

/// `proxyResources` as written: Kubernetes' `requests` / `limits` maps.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    requests: Option<BTreeMap<String, QuantityText>>,
    limits: Option<BTreeMap<String, QuantityText>>,
}

/// A quantity as YAML gives it: `100m` is a string, `1` a number.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum QuantityText {
    Text(String),
    Number(serde_json::Number),
}

/// Reads a revision's mesh config from its ConfigMap (no `mesh` key: all defaults).
pub fn mesh_config(config_map: &core::ConfigMap) -> Result<MeshConfig, ObjectError> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(MESH_KEY))
        .map(String::as_str)
        .unwrap_or("");
    parse_mesh(text).map_err(ObjectError::BadMeshConfig)
}

/// Parses and validates mesh config YAML; every field is optional. Text nested more than
/// [`MAX_DEPTH`](crate::source::yaml::MAX_DEPTH) deep is refused unread.
pub fn parse_mesh(text: &str) -> Result<MeshConfig, String> {
    let raw: RawMesh = if text.trim().is_empty() {
        RawMesh::default()
    } else {
        // Bounded: a ConfigMap from the API server or a manifest is untrusted input.
        crate::source::yaml::from_str(text)?
    };
    let mut mesh = MeshConfig::default();
    if let Some(domain) = raw.domain {
        let valid = !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "domain {domain:?} is not a DNS name such as cluster.local"
            ));
        }
        mesh.domain = domain;
    }
    if let Some(timeout) = raw.connect_timeout {
        let d = humantime::parse_duration(&timeout).map_err(|e| {
            format!("connectTimeout {timeout:?} is not a duration like 1s or 250ms: {e}")
        })?;
        if d.is_zero() {
            return Err("connectTimeout must be greater than 0".to_string());
        }
        mesh.connect_timeout = d;
    }
    if let Some(lb) = raw.lb_policy {
        mesh.lb_policy = match lb.as_str() {
            "ROUND_ROBIN" => LbPolicy::RoundRobin,
            "LEAST_REQUEST" => LbPolicy::LeastRequest,
            "RANDOM" => LbPolicy::Random,
            other => {
                return Err(format!(
                    "lbPolicy {other:?} is not one of ROUND_ROBIN, LEAST_REQUEST, RANDOM"
                ))
            }
        };
    }
    if let Some(mode) = raw.interception_mode {
        mesh.interception = InterceptionMode::parse(&mode)
            .ok_or_else(|| format!("interceptionMode {mode:?} is not one of REDIRECT, NONE"))?;
    }
    if let Some(address) = raw.discovery_address {
        check_host_port(&address)
            .map_err(|e| format!("discoveryAddress {address:?} is not host:port: {e}"))?;
        mesh.sidecar.discovery_address = Some(address);
    }
    if let Some(image) = raw.proxy_image {
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(format!(
                "proxyImage {image:?} is not an image reference such as {}",
                crate::mesh::DEFAULT_PROXY_IMAGE
            ));
        }
        mesh.sidecar.image = image;
    }
    if let Some(resources) = raw.proxy_resources {
        mesh.sidecar.resources = ProxyResources {
            requests: quantities("proxyResources.requests", resources.requests)?,
            limits: quantities("proxyResources.limits", resources.limits)?,
        };
    }
    if let Some(port) = raw.proxy_admin_port {
        mesh.sidecar.admin_port = port;
    }
    for (i, s) in raw
        .discovery_selectors
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        mesh.discovery_selectors
            .push(label_selector(s).map_err(|e| format!("discoverySelectors[{i}]: {e}"))?);
    }
    Ok(mesh)
}

/// Checks `host:port` (a DNS name or an IP, `[v6]:port` for IPv6) with a port in 1-65535.
fn check_host_port(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("no port (write it as host:port, e.g. revplane-canary.revplane-system.svc:15010)")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("port {port:?} is not a number in 1-65535")),
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let dns_name = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if dns_name || host.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is neither a DNS name nor an IP address"
        ))
    }
}

/// Validates a map of Kubernetes quantities (`100m`, `128Mi`, `1.5`, `2e3`).
fn quantities(
    what: &str,
    raw: Option<BTreeMap<String, QuantityText>>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (name, value) in raw.unwrap_or_default() {
        let text = match value {
            QuantityText::Text(t) => t,
            QuantityText::Number(n) => n.to_string(),
        };
        if !is_quantity(&text) {
            return Err(format!(
                "{what}.{name}: {text:?} is not a Kubernetes quantity such as 100m, 128Mi or 2"
            ));
        }
        out.insert(name, text);
    }
    Ok(out)
}

/// Kubernetes' quantity syntax: a signed decimal number, then an optional binary (`Ki`..`Ei`),
/// decimal (`n`, `u`, `m`, `k`, `M`..`E`) or exponent (`e3`, `E-2`) suffix.
fn is_quantity(text: &str) -> bool {
    let digits_end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(digits_end);
    let unsigned = number.trim_start_matches(['+', '-']);
    let number_ok = !unsigned.is_empty()
        && unsigned != "."
        && unsigned.matches('.').count() <= 1
        && number.len() - unsigned.len() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    number_ok && suffix_ok
}

fn label_selector(
    s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<LabelSelector, String> {
    let mut out = LabelSelector {
        match_labels: s.match_labels.unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for e in s.match_expressions.unwrap_or_default() {
        let values = e.values.unwrap_or_default();
        let needs_values = match e.operator.as_str() {
            "In" | "NotIn" => true,
            "Exists" | "DoesNotExist" => false,
            other => {
                return Err(format!(
                    "operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                ))
            }
        };
        if needs_values == values.is_empty() {
            return Err(format!(
                "operator {} on key {:?} {} values",
                e.operator,
                e.key,
                if needs_values { "needs" } else { "takes no" }
            ));
        }
        out.match_expressions.push(match e.operator.as_str() {
            "In" => Requirement::In(e.key, values),
            "NotIn" => Requirement::NotIn(e.key, values),
            "Exists" => Requirement::Exists(e.key),
            _ => Requirement::DoesNotExist(e.key),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_config_reads_istio_style_yaml_and_refuses_half_valid_input() {
        let m = parse_mesh(
            "domain: example.org\nconnectTimeout: 250ms\nlbPolicy: LEAST_REQUEST\ndiscoverySelectors:\n- matchLabels: {istio.io/rev: canary}\n- matchExpressions: [{key: env, operator: In, values: [prod]}]\n",
        )
        .unwrap();
        assert_eq!(m.domain, "example.org");
        assert_eq!(m.connect_timeout, std::time::Duration::from_millis(250));
        assert_eq!(m.lb_policy, LbPolicy::LeastRequest);
        assert_eq!(m.discovery_selectors.len(), 2);
        assert_eq!(parse_mesh("").unwrap(), MeshConfig::default());
        for (bad, why) in [
            ("lbPolicy: MAGLEV", "not one of"),
            ("connectTimeout: 0s", "greater than 0"),
            ("connectTimeout: soon", "not a duration"),
            ("domain: Cluster_Local", "not a DNS name"),
            ("lbPolicy: RANDOM\ntimeout: 1s", "unknown field"),
            (
                "discoverySelectors: [{matchExpressions: [{key: a, operator: In}]}]",
                "needs values",
            ),
            (
                "discoverySelectors: [{matchExpressions: [{key: a, operator: Near, values: [x]}]}]",
                "not one of",
            ),
            (
                format!("domain: {}", "[".repeat(50_000)).as_str(),
                "nested more than",
            ),
        ] {
            let err = parse_mesh(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn mesh_config_carries_the_sidecar_settings() {
        let m = parse_mesh(
            "discoveryAddress: revplane-canary.revplane-system.svc:15010\nproxyImage: registry.local/envoy:v1.40.0\nproxyAdminPort: 0\nproxyResources:\n  requests: {cpu: 100m, memory: 128Mi}\n  limits: {cpu: 2, memory: 1Gi}\n",
        )
        .unwrap();
        let sidecar = &m.sidecar;
        assert_eq!(
            sidecar.discovery_address.as_deref(),
            Some("revplane-canary.revplane-system.svc:15010")
        );
        assert_eq!(sidecar.image, "registry.local/envoy:v1.40.0");
        assert_eq!(sidecar.admin_port, 0);
        assert_eq!(sidecar.resources.requests["cpu"], "100m");
        assert_eq!(sidecar.resources.limits["cpu"], "2");
        assert_eq!(sidecar.resources.limits["memory"], "1Gi");
        assert!(parse_mesh("discoveryAddress: '[::1]:15010'").is_ok());
        assert!(parse_mesh("discoveryAddress: 127.0.0.1:15010").is_ok());
        for (bad, why) in [
            ("discoveryAddress: revplane-canary", "no port"),
            ("discoveryAddress: 'a b:15010'", "neither a DNS name"),
            ("discoveryAddress: host:0", "not a number in 1-65535"),
            ("proxyImage: ''", "not an image reference"),
            (
                "proxyResources: {requests: {cpu: lots}}",
                "not a Kubernetes quantity",
            ),
            ("proxyResources: {request: {cpu: 1}}", "unknown field"),
            ("proxyAdminPort: 70000", "proxyAdminPort"),
        ] {
            let err = parse_mesh(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn interception_mode_defaults_to_redirect_and_accepts_none() {
        assert_eq!(
            parse_mesh("").unwrap().interception,
            InterceptionMode::Redirect
        );
        assert_eq!(
            parse_mesh("interceptionMode: NONE").unwrap().interception,
            InterceptionMode::None
        );
        assert_eq!(
            parse_mesh("interceptionMode: REDIRECT")
                .unwrap()
                .interception,
            InterceptionMode::Redirect
        );
        for bad in ["interceptionMode: TPROXY", "interceptionMode: none"] {
            let err = parse_mesh(bad).unwrap_err();
            assert!(err.contains("not one of REDIRECT, NONE"), "{bad}: {err}");
        }
        let other = MeshConfig {
            interception: InterceptionMode::None,
            ..Default::default()
        };
        assert_eq!(
            crate::catalog::content_hash(&other.translation_inputs()),
            crate::catalog::content_hash(&MeshConfig::default().translation_inputs()),
            "the interception default is read per proxy, not by translation"
        );
    }

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        for ok in [
            "1", "100m", "1.5", "128Mi", "2e3", "1E-2", "+1", ".5", "0.5Gi", "10k",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "1mi", "1 Gi", "--1", "1e", "lots", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
