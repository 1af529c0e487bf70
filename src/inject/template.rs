//! The sidecar container the injector adds: Envoy 1.40 with its whole bootstrap in
//! `--config-yaml`, so the container runs from its pod spec alone (no agent, no mounted file).
//!
//! Pod-specific values come from the downward API as environment variables and reach the
//! bootstrap through Kubernetes' `$(VAR)` expansion of container args: the node id is
//! Istio's `sidecar~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.<domain>`, and
//! the node metadata carries `REVISION` (the resolved revision, never a tag), `NAMESPACE`,
//! `POD_NAME`, `SERVICE_ACCOUNT` and `INTERCEPTION_MODE: NONE` (nothing redirects traffic to
//! the sidecar yet; see docs/upgrade.md). Pure: builds values, performs no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, ResourceRequirements,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use crate::mesh::{MeshConfig, ProxyResources};
use crate::revision::Revision;

/// Name of the injected container.
pub const PROXY_CONTAINER: &str = "revplane-proxy";

/// xDS port of a revision's Service.
pub const XDS_PORT: u16 = 15010;

/// UID and GID the sidecar runs as (Istio's).
const PROXY_UID: i64 = 1337;

/// What the sidecar of one pod is built from.
#[derive(Clone, Debug)]
pub struct SidecarSpec<'a> {
    /// The revision that injects it (written as `REVISION`).
    pub revision: &'a Revision,
    /// Namespace of the control plane, for the default discovery address.
    pub control_namespace: &'a str,
    /// The revision's mesh config.
    pub mesh: &'a MeshConfig,
    /// The workload's name for the node's cluster (`<workload>.<namespace>`): the pod's
    /// `app` label, else its name.
    pub workload: &'a str,
}

impl SidecarSpec<'_> {
    /// `host:port` the sidecar dials: mesh config `discoveryAddress`, else the revision's
    /// Service `revplane-<rev>.<control namespace>.svc:15010`.
    pub fn discovery_address(&self) -> String {
        self.mesh
            .sidecar
            .discovery_address
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "revplane-{}.{}.svc:{XDS_PORT}",
                    self.revision, self.control_namespace
                )
            })
    }

    /// The container to add.
    pub fn container(&self) -> Container {
        let sidecar = &self.mesh.sidecar;
        Container {
            name: PROXY_CONTAINER.to_string(),
            image: Some(sidecar.image.clone()),
            command: Some(vec!["envoy".to_string()]),
            args: Some(vec![
                "--config-yaml".to_string(),
                self.bootstrap_yaml(),
                // No agent restarts Envoy in place; the kubelet restarts the container.
                "--disable-hot-restart".to_string(),
            ]),
            env: Some(vec![
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("POD_IP", "status.podIP"),
                field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            ]),
            resources: resources(&sidecar.resources),
            security_context: Some(SecurityContext {
                run_as_user: Some(PROXY_UID),
                run_as_group: Some(PROXY_UID),
                run_as_non_root: Some(true),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_string()]),
                    add: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Envoy bootstrap, as YAML with `$(VAR)` references for the kubelet to expand.
    pub fn bootstrap_yaml(&self) -> String {
        let bootstrap = self.bootstrap();
        serde_yaml_ng::to_string(&bootstrap).expect("a JSON value always serializes as YAML")
    }

    fn bootstrap(&self) -> Value {
        let domain = &self.mesh.domain;
        let address = self.discovery_address();
        // Validated by the mesh config parser: host:port, IPv6 in brackets.
        let (host, port) = address.rsplit_once(':').unwrap_or((&address, "15010"));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().unwrap_or(XDS_PORT);
        let discovery = if host.parse::<IpAddr>().is_ok() {
            "STATIC"
        } else {
            "STRICT_DNS"
        };
        json!({
            "node": {
                "id": format!(
                    "sidecar~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.{domain}"
                ),
                "cluster": format!("{}.$(POD_NAMESPACE)", self.workload),
                "metadata": {
                    "REVISION": self.revision.as_str(),
                    "NAMESPACE": "$(POD_NAMESPACE)",
                    "POD_NAME": "$(POD_NAME)",
                    "SERVICE_ACCOUNT": "$(SERVICE_ACCOUNT)",
                    "INTERCEPTION_MODE": "NONE",
                },
            },
            "admin": {
                "address": { "socket_address": {
                    "address": "127.0.0.1",
                    "port_value": self.mesh.sidecar.admin_port,
                }},
            },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds-grpc" } }],
                },
                "cds_config": { "ads": {}, "resource_api_version": "V3" },
                "lds_config": { "ads": {}, "resource_api_version": "V3" },
            },
            "static_resources": {
                "clusters": [{
                    "name": "xds-grpc",
                    "type": discovery,
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": { "http2_protocol_options": {} },
                        },
                    },
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                            "socket_address": { "address": host, "port_value": port },
                        }}}]}],
                    },
                }],
            },
        })
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_string()),
                field_path: path.to_string(),
            }),
            ..Default::default()
        }),
    }
}

fn resources(r: &ProxyResources) -> Option<ResourceRequirements> {
    let map = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    (!r.requests.is_empty() || !r.limits.is_empty()).then(|| ResourceRequirements {
        requests: map(&r.requests),
        limits: map(&r.limits),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(revision: &'a Revision, mesh: &'a MeshConfig) -> SidecarSpec<'a> {
        SidecarSpec {
            revision,
            control_namespace: "revplane-system",
            mesh,
            workload: "web",
        }
    }

    #[test]
    fn the_bootstrap_names_the_node_the_istio_way_and_dials_the_revision() {
        let rev: Revision = "canary".parse().unwrap();
        let mesh = MeshConfig::default();
        let s = spec(&rev, &mesh);
        assert_eq!(
            s.discovery_address(),
            "revplane-canary.revplane-system.svc:15010"
        );
        let b: Value = serde_yaml_ng::from_str(&s.bootstrap_yaml()).unwrap();
        assert_eq!(
            b["node"]["id"],
            "sidecar~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.cluster.local"
        );
        assert_eq!(b["node"]["cluster"], "web.$(POD_NAMESPACE)");
        assert_eq!(b["node"]["metadata"]["REVISION"], "canary");
        assert_eq!(
            b["node"]["metadata"]["SERVICE_ACCOUNT"],
            "$(SERVICE_ACCOUNT)"
        );
        let xds = &b["static_resources"]["clusters"][0];
        assert_eq!(xds["type"], "STRICT_DNS");
        let addr = &xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];
        assert_eq!(addr["address"], "revplane-canary.revplane-system.svc");
        assert_eq!(addr["port_value"], 15010);
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15000);
    }

    #[test]
    fn mesh_config_shapes_the_container() {
        let rev: Revision = "stable".parse().unwrap();
        let mut mesh = MeshConfig::default();
        mesh.sidecar.discovery_address = Some("127.0.0.1:25010".into());
        mesh.sidecar.image = "registry.local/envoy:v1.40.0".into();
        mesh.sidecar.admin_port = 0;
        mesh.sidecar
            .resources
            .requests
            .insert("cpu".into(), "100m".into());
        let c = spec(&rev, &mesh).container();
        assert_eq!(c.name, PROXY_CONTAINER);
        assert_eq!(c.image.as_deref(), Some("registry.local/envoy:v1.40.0"));
        assert_eq!(c.command.as_deref(), Some(&["envoy".to_string()][..]));
        let args = c.args.unwrap();
        assert_eq!(args[0], "--config-yaml");
        let b: Value = serde_yaml_ng::from_str(&args[1]).unwrap();
        let xds = &b["static_resources"]["clusters"][0];
        assert_eq!(xds["type"], "STATIC");
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 0);
        let r = c.resources.unwrap();
        assert_eq!(r.requests.unwrap()["cpu"].0, "100m");
        assert!(r.limits.is_none());
        let env: Vec<String> = c.env.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(
            env,
            ["POD_NAME", "POD_NAMESPACE", "POD_IP", "SERVICE_ACCOUNT"]
        );
        let sc = c.security_context.unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn an_ipv6_discovery_address_loses_its_brackets() {
        let rev: Revision = "stable".parse().unwrap();
        let mut mesh = MeshConfig::default();
        mesh.sidecar.discovery_address = Some("[::1]:15010".into());
        let b: Value = serde_yaml_ng::from_str(&spec(&rev, &mesh).bootstrap_yaml()).unwrap();
        let xds = &b["static_resources"]["clusters"][0];
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["address"],
            "::1"
        );
    }
}
