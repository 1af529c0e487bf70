//! In-process tier for CSDS: the real server on 127.0.0.1:0, a scripted ADS client playing the
//! proxy, and a CSDS client asking where it stands.

mod common;

use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ConfigStatus,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use prost::Message;
use revplane::xds::csds::CONTROL_PLANE_HEADER;
use tonic::Code;

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

async fn client(
    addr: std::net::SocketAddr,
) -> ClientStatusDiscoveryServiceClient<tonic::transport::Channel> {
    ClientStatusDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the xDS port")
}

/// Every proxy the server reports (FetchClientStatus, no matcher).
async fn proxies(addr: std::net::SocketAddr) -> Vec<ClientConfig> {
    let response = client(addr)
        .await
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .expect("CSDS answers");
    response.into_inner().config
}

fn exact(id: &str) -> NodeMatcher {
    NodeMatcher {
        node_id: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(id.to_string())),
            ignore_case: false,
        }),
        node_metadatas: vec![],
    }
}

/// The entry of `type_url` in the first proxy's config.
fn of<'a>(configs: &'a [ClientConfig], type_url: &str) -> &'a GenericXdsConfig {
    configs[0]
        .generic_xds_configs
        .iter()
        .find(|g| g.type_url == type_url)
        .unwrap_or_else(|| panic!("no {type_url} in {configs:?}"))
}

fn acked_version(g: &GenericXdsConfig) -> String {
    let own = Struct::decode(g.xds_config.as_ref().unwrap().value.as_slice()).unwrap();
    match &own.fields["acked_version"].kind {
        Some(Kind::StringValue(v)) => v.clone(),
        other => panic!("acked_version: {other:?}"),
    }
}

/// Polls CSDS until the first proxy's `type_url` entry has `status`.
async fn until_status(
    addr: std::net::SocketAddr,
    type_url: &str,
    status: ConfigStatus,
) -> Vec<ClientConfig> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let configs = proxies(addr).await;
        if !configs.is_empty() && of(&configs, type_url).config_status == status as i32 {
            return configs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{type_url} not {status:?} within 2 s: {configs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_type_reads_stale_then_synced_and_untouched_types_not_sent() {
    let server = start("canary", &example_mesh()).await;
    let mut proxy = AdsClient::open(&server, first_cds("proxy-a", "canary"))
        .await
        .unwrap();
    let cds = proxy.recv().await.unwrap();

    let configs = until_status(server.xds_addr, CDS, ConfigStatus::Stale).await;
    let node = configs[0].node.as_ref().unwrap();
    assert_eq!(node.id, "proxy-a");
    let metadata = &node.metadata.as_ref().unwrap().fields;
    assert_eq!(
        metadata["REVISION"].kind,
        Some(Kind::StringValue("canary".into()))
    );
    assert_eq!(
        metadata["NAMESPACE"].kind,
        Some(Kind::StringValue("shop".into()))
    );
    let sent = of(&configs, CDS);
    assert_eq!(
        sent.version_info, cds.version_info,
        "the version sent, unanswered"
    );
    assert_eq!(sent.client_status, ClientResourceStatus::Requested as i32);
    for never in [EDS, LDS] {
        let g = of(&configs, never);
        assert_eq!(g.config_status, ConfigStatus::NotSent as i32, "{never}");
        assert_eq!(g.version_info, "");
    }

    proxy.ack(&cds, &[]).await;
    let configs = until_status(server.xds_addr, CDS, ConfigStatus::Synced).await;
    let synced = of(&configs, CDS);
    assert_eq!(synced.version_info, cds.version_info);
    assert_eq!(acked_version(synced), cds.version_info, "acked = sent");
    assert_eq!(synced.client_status, ClientResourceStatus::Acked as i32);
    assert!(synced.error_state.is_none());

    proxy.send(request(EDS, &names(&cds), "", "")).await;
    let eds = proxy.recv().await.unwrap();
    proxy.ack(&eds, &names(&cds)).await;
    let configs = until_status(server.xds_addr, EDS, ConfigStatus::Synced).await;
    assert_eq!(of(&configs, EDS).version_info, eds.version_info);

    // The server names itself: revision and version, as in control_plane.identifier.
    let response = client(server.xds_addr)
        .await
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap();
    let identity = response.metadata().get(CONTROL_PLANE_HEADER).unwrap();
    assert_eq!(
        identity.to_str().unwrap(),
        format!("revplane/canary {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        cds.control_plane.unwrap().identifier,
        identity.to_str().unwrap()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_nack_reads_nacked_with_the_proxy_message_and_the_rejected_version() {
    let server = start("canary", &example_mesh()).await;
    let mut proxy = AdsClient::open(&server, first_cds("proxy-n", "canary"))
        .await
        .unwrap();
    let cds = proxy.recv().await.unwrap();
    proxy
        .send(DiscoveryRequest {
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "cluster type not supported by this build".into(),
                details: vec![],
            }),
            ..request(CDS, &[], "", &cds.nonce)
        })
        .await;
    let configs = until_status(server.xds_addr, CDS, ConfigStatus::Error).await;
    let nacked = of(&configs, CDS);
    assert_eq!(nacked.client_status, ClientResourceStatus::Nacked as i32);
    let error = nacked
        .error_state
        .as_ref()
        .expect("error_state holds the NACK");
    assert_eq!(error.details, "cluster type not supported by this build");
    assert_eq!(error.version_info, cds.version_info, "the rejected version");
    assert!(error.last_update_attempt.is_some());
    assert_eq!(acked_version(nacked), "", "nothing acknowledged");
    server.stop().await;
}

#[tokio::test]
async fn an_exact_node_id_selects_one_proxy_and_other_matchers_are_refused() {
    let server = start("canary", &example_mesh()).await;
    let mut a = AdsClient::open(&server, first_cds("proxy-a", "canary"))
        .await
        .unwrap();
    let mut b = AdsClient::open(&server, first_cds("proxy-b", "canary"))
        .await
        .unwrap();
    a.recv().await.unwrap();
    b.recv().await.unwrap();
    let addr = server.xds_addr;
    eventually(Duration::from_secs(2), "both proxies listed", || async {
        proxies(addr).await.len() == 2
    })
    .await;

    let mut csds = client(addr).await;
    let one = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![exact("proxy-b")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .config;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].node.as_ref().unwrap().id, "proxy-b");
    let none = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![exact("proxy-z")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .config;
    assert!(none.is_empty());

    let prefix = NodeMatcher {
        node_id: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Prefix("proxy-".into())),
            ignore_case: false,
        }),
        node_metadatas: vec![],
    };
    let status = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![prefix],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("exact node id"),
        "{}",
        status.message()
    );

    // The streaming method answers each request in turn.
    let requests = tokio_stream::iter([
        ClientStatusRequest::default(),
        ClientStatusRequest {
            node_matchers: vec![exact("proxy-a")],
            ..Default::default()
        },
    ]);
    let mut answers = csds
        .stream_client_status(requests)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answers.message().await.unwrap().unwrap().config.len(), 2);
    let only_a = answers.message().await.unwrap().unwrap().config;
    assert_eq!(only_a[0].node.as_ref().unwrap().id, "proxy-a");
    server.stop().await;
}

#[tokio::test]
async fn csds_is_not_revision_gated_and_a_gone_proxy_leaves_the_answer() {
    let server = start("stable", &example_mesh()).await;
    let mut proxy = AdsClient::open(&server, first_cds("proxy-s", "stable"))
        .await
        .unwrap();
    proxy.recv().await.unwrap();
    let addr = server.xds_addr;
    // The CSDS client names no node and no revision, and is answered.
    eventually(Duration::from_secs(2), "the proxy is listed", || async {
        proxies(addr).await.len() == 1
    })
    .await;
    drop(proxy);
    eventually(Duration::from_secs(2), "the proxy is gone", || async {
        proxies(addr).await.is_empty()
    })
    .await;
    server.stop().await;
}
