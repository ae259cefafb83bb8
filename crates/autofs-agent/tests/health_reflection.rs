//! End-to-end tests of the agent's standard services: grpc.health.v1 (readiness follows the
//! scans) and server reflection v1 and v1alpha, through real clients against the real binary.

mod common;

use autofs_api::v1;
use common::{API_SERVICE, Agent, fixture_proc_root};
use prost::Message;
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_after_the_first_scan_and_unknown_services_are_not_found() {
    let agent = Agent::start(&[]);
    agent.wait_health("", ServingStatus::Serving).await;
    agent.wait_health(API_SERVICE, ServingStatus::Serving).await;
    let unknown = agent
        .health()
        .await
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_while_scans_keep_failing_and_serving_when_they_recover() {
    let (dir, proc_root) = fixture_proc_root("active_indirect");
    let agent = Agent::from_builder(Agent::builder().proc_root(&proc_root));
    for service in ["", API_SERVICE] {
        agent.wait_health(service, ServingStatus::Serving).await;
    }
    let mut client = agent.client().await;
    let reports = common::list_ns(&mut client, 4026531841).await;
    assert_eq!(
        common::ids(&reports),
        [40],
        "the fixture's mount: {reports:#?}"
    );

    // The proc root goes away (an unmounted /host/proc): every scan fails.
    let gone = dir.path().join("proc.gone");
    std::fs::rename(&proc_root, &gone).unwrap();
    for service in ["", API_SERVICE] {
        agent.wait_health(service, ServingStatus::NotServing).await;
    }
    // On-demand RPCs may reuse the last scan while it is younger than --max-scan-age (1 s),
    // then say UNAVAILABLE instead of serving stale data.
    let status = list_fails(&client).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("proc"), "{status:?}");

    // It comes back: serving again.
    std::fs::rename(&gone, &proc_root).unwrap();
    for service in ["", API_SERVICE] {
        agent.wait_health(service, ServingStatus::Serving).await;
    }
    assert_eq!(
        common::ids(&common::list_ns(&mut client, 4026531841).await),
        [40]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scan_is_retried_within_seconds_whatever_the_scan_interval() {
    // With an hour between full scans, only the retries of failed scans can turn health
    // NOT_SERVING and back: nothing else scans this fixture tree (no mount table of it
    // changes) and the test makes no RPC that scans after the first failure.
    let (dir, proc_root) = fixture_proc_root("active_indirect");
    let agent = Agent::from_builder(Agent::builder().scan_interval("1h").proc_root(&proc_root));
    for service in ["", API_SERVICE] {
        agent.wait_health(service, ServingStatus::Serving).await;
    }
    let mut client = agent.client().await;

    // One on-demand scan fails (the last scan is older than --max-scan-age, 1 s); the
    // background scanner retries after 1 s and 2 s: three failures in a row.
    let gone = dir.path().join("proc.gone");
    std::fs::rename(&proc_root, &gone).unwrap();
    let status = list_fails(&client).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for service in ["", API_SERVICE] {
        agent
            .wait_health_within(service, ServingStatus::NotServing, Duration::from_secs(60))
            .await;
    }

    // The proc root is back: a retry finds it (an hour away without retries; at most 8 s
    // away with them).
    std::fs::rename(&gone, &proc_root).unwrap();
    for service in ["", API_SERVICE] {
        agent
            .wait_health_within(service, ServingStatus::Serving, Duration::from_secs(60))
            .await;
    }
    assert_eq!(
        common::ids(&common::list_ns(&mut client, 4026531841).await),
        [40]
    );
}

/// The first ListMounts that fails, once the agent's last scan is too old to reuse
/// (--max-scan-age, 1 s) and a fresh one fails.
async fn list_fails(
    client: &autofs_api::v1::autofs_inspector_client::AutofsInspectorClient<
        tonic::transport::Channel,
    >,
) -> tonic::Status {
    common::eventually("ListMounts fails", || {
        let mut client = client.clone();
        async move {
            common::list(&mut client, v1::ListMountsRequest::default())
                .await
                .err()
        }
    })
    .await
}

/// `async fn $name(agent) -> Vec<String>`: the services reflection `$version` lists, asked
/// over a new connection (the two versions have the same shape in different modules).
macro_rules! reflected_services {
    ($(#[$doc:meta])* $name:ident, $version:ident) => {
        $(#[$doc])*
        async fn $name(agent: &Agent) -> Vec<String> {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let mut client = ServerReflectionClient::new(agent.channel().await);
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = responses.message().await.unwrap().expect("one response");
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|s| s.name).collect()
                }
                other => panic!("not a service list: {other:?}"),
            }
        }
    };
}

reflected_services!(
    /// Services listed by reflection v1.
    services_v1,
    v1
);
reflected_services!(
    /// Services listed by reflection v1alpha (what grpcurl and Python's grpcio speak).
    services_v1alpha,
    v1alpha
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_the_api_and_health_services() {
    let agent = Agent::start(&[]);
    for (version, services) in [
        ("v1", services_v1(&agent).await),
        ("v1alpha", services_v1alpha(&agent).await),
    ] {
        for wanted in ["autofs.v1.AutofsInspector", "grpc.health.v1.Health"] {
            assert!(
                services.iter().any(|s| s == wanted),
                "reflection {version} lacks {wanted}: {services:?}"
            );
        }
    }
}

/// The files reflection v1 answers `request` with.
async fn reflect_files(
    agent: &Agent,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> Vec<prost_types::FileDescriptorProto> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(agent.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let response = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("one response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("no descriptor: {response:?}");
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|raw| prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_serves_the_api_descriptor_and_its_dependencies_by_name() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let agent = Agent::start(&[]);
    let files = reflect_files(
        &agent,
        MessageRequest::FileContainingSymbol("autofs.v1.AutofsInspector".into()),
    )
    .await;
    let api = files
        .iter()
        .find(|f| f.package() == "autofs.v1")
        .expect("the autofs.v1 file");
    let service = &api.service[0];
    assert_eq!(service.name(), "AutofsInspector");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "ListMounts",
            "WatchMounts",
            "CheckMigratable",
            "GetNodeInfo",
            "WaitMigratable"
        ]
    );
    // Clients (grpcurl, grpcio) then fetch the imports by file name.
    assert_eq!(api.dependency, ["criu/autofs.proto"]);
    let criu = reflect_files(
        &agent,
        MessageRequest::FileByFilename("criu/autofs.proto".into()),
    )
    .await;
    assert_eq!(criu[0].package(), "criu");
    assert!(
        criu[0]
            .message_type
            .iter()
            .any(|m| m.name() == "autofs_entry"),
        "{criu:#?}"
    );
}
