//! `revplane proxy-status`: asks one or more instances over CSDS ([`crate::xds::csds`]) which
//! proxies they serve and where each resource type stands, and prints one table for all.
//!
//! Instances are asked concurrently; one that cannot be asked is reported (address and
//! reason) while the others are still shown, and the command then exits non-zero. With a
//! `<node>` argument (node id or `<pod>.<namespace>`) it shows that proxy in detail: each
//! type's status, sent and acknowledged versions, nonce and last NACK.

mod render;
mod report;

use std::time::Duration;

use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientConfig, ClientStatusRequest};
use tonic::transport::Endpoint;

use crate::xds::csds::CONTROL_PLANE_HEADER;

pub use render::{details, table};
pub use report::{
    parse_control_plane, proxy_report, InstanceReport, NackReport, ProxyReport, Report, TypeReport,
};

/// Largest CSDS answer accepted (an instance with many proxies answers in one message).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Flags of `revplane proxy-status`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyStatusArgs {
    /// xDS address (`host:port`) of an instance to ask; repeat (or separate with commas in
    /// the environment) for several instances, e.g. one per revision.
    #[arg(
        long = "xds-addr",
        value_name = "HOST:PORT",
        env = "REVPLANE_PROXY_STATUS_XDS_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:15010"
    )]
    pub xds_addrs: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long, env = "REVPLANE_PROXY_STATUS_JSON")]
    pub json: bool,

    /// Give up on an instance that has not answered within this long.
    #[arg(long, env = "REVPLANE_PROXY_STATUS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Show one proxy in detail: its node id or `<pod>.<namespace>`.
    pub node: Option<String>,
}

/// Why `proxy-status` exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStatusError {
    /// Some instances could not be asked (the others were shown).
    #[error("could not ask {} of {total} instance(s):\n  {}", failed.len(), failed.join("\n  "))]
    Unreachable {
        /// `<address>: <reason>` per failed instance.
        failed: Vec<String>,
        /// Instances asked.
        total: usize,
    },
    /// No instance serves the proxy asked for.
    #[error("no proxy {node:?} (node id or <pod>.<namespace>) is connected to {}", asked.join(", "))]
    NotFound {
        /// What was asked for.
        node: String,
        /// Addresses asked.
        asked: Vec<String>,
    },
    /// The report could not be written as JSON.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Asks every instance in `args`, prints the answer, and says whether all could be asked.
pub async fn run(args: ProxyStatusArgs) -> Result<(), ProxyStatusError> {
    let report = collect(&args.xds_addrs, args.node.as_deref(), args.timeout).await;
    let text = match (&args.node, args.json) {
        (_, true) => serde_json::to_string_pretty(&report)? + "\n",
        (None, false) => table(&report.proxies),
        (Some(_), false) if report.proxies.is_empty() => String::new(),
        (Some(_), false) => details(&report.proxies),
    };
    print!("{text}");
    report.outcome(&args.xds_addrs, args.node.as_deref())
}

/// Asks every address; with `node`, only for that proxy (by exact node id first, then by
/// `<pod>.<namespace>` among all proxies).
pub async fn collect(addresses: &[String], node: Option<&str>, timeout: Duration) -> Report {
    let Some(node) = node else {
        return ask_all(addresses, Vec::new(), timeout).await;
    };
    let exact = NodeMatcher {
        node_id: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(node.to_string())),
            ignore_case: false,
        }),
        node_metadatas: Vec::new(),
    };
    let by_id = ask_all(addresses, vec![exact], timeout).await;
    if !by_id.proxies.is_empty() {
        return by_id;
    }
    let mut all = ask_all(addresses, Vec::new(), timeout).await;
    all.proxies.retain(|p| p.name == node);
    for i in &mut all.instances {
        i.proxies = all
            .proxies
            .iter()
            .filter(|p| p.instance == i.address)
            .count();
    }
    all
}

async fn ask_all(addresses: &[String], matchers: Vec<NodeMatcher>, timeout: Duration) -> Report {
    let answers =
        futures::future::join_all(addresses.iter().map(|a| ask(a, matchers.clone(), timeout)))
            .await;
    let mut report = Report::default();
    for (address, answer) in addresses.iter().zip(answers) {
        let mut instance = InstanceReport {
            address: address.clone(),
            ..Default::default()
        };
        match answer {
            Ok((control_plane, configs)) => {
                (instance.revision, instance.version) = parse_control_plane(&control_plane);
                instance.proxies = configs.len();
                report.proxies.extend(
                    configs
                        .iter()
                        .map(|c| proxy_report(c, address, instance.version.clone())),
                );
            }
            Err(why) => instance.error = Some(why),
        }
        report.instances.push(instance);
    }
    report
        .proxies
        .sort_by(|a, b| (&a.name, &a.instance).cmp(&(&b.name, &b.instance)));
    report
}

/// One CSDS request to `address`: the control plane identifier and the proxies, or why not.
async fn ask(
    address: &str,
    node_matchers: Vec<NodeMatcher>,
    timeout: Duration,
) -> Result<(String, Vec<ClientConfig>), String> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| {
            format!(
                "not an address (want host:port): {}",
                crate::errors::chain(&e)
            )
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let asking = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {}", crate::errors::chain(&e)))?;
        let mut client = ClientStatusDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_ANSWER_BYTES);
        let request = ClientStatusRequest {
            node_matchers,
            ..Default::default()
        };
        let response = client
            .fetch_client_status(request)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unimplemented => format!(
                    "does not serve CSDS (is it the xDS port of `revplane serve`?): {}",
                    s.message()
                ),
                code => format!("CSDS request failed: {code:?}: {}", s.message()),
            })?;
        let control_plane = response
            .metadata()
            .get(CONTROL_PLANE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((control_plane, response.into_inner().config))
    };
    tokio::time::timeout(timeout, asking)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}
