//! Kubernetes API discovery (feature `kube`) with kube-rs against a fake API server: a small
//! HTTPS server (rustls, rcgen certificates) that checks the bearer token and serves recorded
//! API responses (tests/fixtures/kube) page by page. Credentials come the ways users give
//! them: a kubeconfig token, an exec credential plugin (a script printing an
//! `ExecCredential`, as `aws eks get-token` does), and in-cluster service account files.
//! The end-to-end tests run the real CLI against a real agent on loopback.
#![cfg(feature = "kube")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use autofs_controller::discovery::kube::{
    Credentials, KubeDiscovery, KubeError, NodePage, PodPage,
};
use autofs_controller::discovery::{self, Source};
use autofs_controller::{DiscoveryError, NodeEndpoint};
use common::{error_chain, start_agent};
use k8s_openapi::api::core::v1::{Node, Pod};
use rcgen::{CertificateParams, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "t0ken";
const SELECTOR: &str = "app.kubernetes.io/name=autofs-agent";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kube")
            .join(name),
    )
    .unwrap()
}

fn pods(list: &[u8]) -> Vec<Pod> {
    let list: Value = serde_json::from_slice(list).unwrap();
    serde_json::from_value(list["items"].clone()).unwrap()
}

/// `(address, expected node, not ready)` of each endpoint.
fn summary(eps: &[NodeEndpoint]) -> Vec<(String, Option<String>, Option<String>)> {
    eps.iter()
        .map(|e| {
            (
                e.address.clone(),
                e.expected_node.clone(),
                e.not_ready.clone(),
            )
        })
        .collect()
}

#[test]
fn running_pods_become_endpoints_and_pending_ones_not_ready_endpoints() {
    let mut page = PodPage::default();
    page.add(&pods(&fixture("pods-page1.json")), 50051).unwrap();
    page.add(&pods(&fixture("pods-page2.json")), 50051).unwrap();
    let eps = page.endpoints();
    let s = |a: &str, n: &str, r: Option<&str>| {
        (a.to_owned(), Some(n.to_owned()), r.map(str::to_owned))
    };
    assert_eq!(
        summary(&eps),
        [
            s("10.244.1.17:50051", "worker-a", None),
            s("10.244.2.9:50051", "worker-b", None),
            s("[fd00:10:244:5::7]:50051", "worker-e", None),
            s(
                "pod/kube-system/autofs-agent-9pl3v",
                "worker-c",
                Some("agent pod is Pending")
            ),
        ]
    );
    assert_eq!(eps[0].origin, "pod kube-system/autofs-agent-4m9sd");
    assert_eq!(
        page.skipped,
        ["kube-system/autofs-agent-zz81q: terminating"]
    );
}

#[test]
fn not_ready_pods_say_their_phase_and_reason_once_per_node() {
    let list = json!({"kind": "PodList", "items": [
        // Crash-looping out of Running, with its IP still set.
        {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1"},
         "status": {"phase": "Pending", "podIP": "10.0.0.1", "containerStatuses": [
            {"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 7,
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}]}},
        {"metadata": {"name": "b", "namespace": "ns"}, "spec": {"nodeName": "n2"},
         "status": {"phase": "Running"}},
        // Evicted, and its replacement still pending on the same node: one entry, the new pod.
        {"metadata": {"name": "c-old", "namespace": "ns"}, "spec": {"nodeName": "n3"},
         "status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}},
        {"metadata": {"name": "c-new", "namespace": "ns"}, "spec": {"nodeName": "n3"},
         "status": {"phase": "Pending", "conditions": [
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]}},
        // A rolling update: the new pod waits while the old one still serves.
        {"metadata": {"name": "d-new", "namespace": "ns"}, "spec": {"nodeName": "n4"},
         "status": {"phase": "Pending"}},
        {"metadata": {"name": "d-old", "namespace": "ns"}, "spec": {"nodeName": "n4"},
         "status": {"phase": "Running", "podIP": "10.0.0.4"}},
        {"metadata": {"name": "e", "namespace": "ns"}, "spec": {},
         "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available"}]}},
    ]});
    let mut page = PodPage::default();
    page.add(&pods(list.to_string().as_bytes()), 7).unwrap();
    let eps = page.endpoints();
    let s = |a: &str, n: Option<&str>, r: &str| {
        (
            a.to_owned(),
            n.map(str::to_owned),
            (!r.is_empty()).then(|| r.to_owned()),
        )
    };
    assert_eq!(
        summary(&eps),
        [
            s("10.0.0.4:7", Some("n4"), ""),
            s(
                "10.0.0.1:7",
                Some("n1"),
                "agent pod is Pending (CrashLoopBackOff: back-off 5m0s)"
            ),
            s(
                "pod/ns/b",
                Some("n2"),
                "agent pod is Running, no pod IP yet"
            ),
            s(
                "pod/ns/c-new",
                Some("n3"),
                "agent pod is Pending (ContainersNotReady)"
            ),
            s(
                "pod/ns/e",
                None,
                "agent pod is Pending, not scheduled on a node (Unschedulable: 0/3 nodes are available)"
            ),
        ]
    );
}

#[test]
fn a_pod_ip_that_is_no_ip_is_a_malformed_pod_list() {
    let list = br#"{"kind":"PodList","items":[{"metadata":{"name":"p"},"spec":{"nodeName":"n"},"status":{"phase":"Running","podIP":"nope"}}]}"#;
    let e = PodPage::default().add(&pods(list), 1).unwrap_err();
    assert!(matches!(e, KubeError::Parse(_)), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
}

/// What the fake API server answers to one request.
struct Reply {
    /// `200 OK`, `429 Too Many Requests`, …
    status: &'static str,
    /// Extra header lines (`Retry-After: 2`).
    headers: Vec<String>,
    body: Vec<u8>,
    /// Close the connection after reading the request, without answering (a reset).
    drop: bool,
}

impl Reply {
    fn new(status: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            drop: false,
        }
    }

    fn ok(body: Vec<u8>) -> Reply {
        Reply::new("200 OK", body)
    }

    fn forbidden() -> Reply {
        Reply::new("403 Forbidden", fixture("forbidden.json"))
    }

    fn dropped() -> Reply {
        Reply {
            drop: true,
            ..Reply::new("", Vec::new())
        }
    }
}

/// What the fake API server answers for a request path and bearer token.
type Responder = dyn Fn(&str, Option<&str>) -> Reply + Send + Sync;

/// `(path, bearer token)` of a request the fake API server received.
type Request = (String, Option<String>);

/// A fake API server on 127.0.0.1 over TLS; records every request.
struct FakeApi {
    port: u16,
    ca_pem: String,
    requests: Arc<Mutex<Vec<Request>>>,
    arrivals: Arc<Mutex<Vec<std::time::Instant>>>,
    _task: tokio::task::JoinHandle<()>,
}

/// Whether a request lists Nodes.
fn is_nodes(path: &str) -> bool {
    path.starts_with("/api/v1/nodes?")
}

/// The `spec.nodeName` of every pod of a PodList, each once.
fn pod_nodes(pods: &[u8]) -> Vec<String> {
    let list: Value = serde_json::from_slice(pods).unwrap_or(Value::Null);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A NodeList of Ready nodes named `names`, in the API's shape.
fn node_list(names: &[impl AsRef<str>]) -> Vec<u8> {
    let items: Vec<Value> = names.iter().map(|n| ready_node(n.as_ref())).collect();
    json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "48213390"},
           "items": items})
    .to_string()
    .into_bytes()
}

/// A Ready, schedulable node, as the API sends it (trimmed).
fn ready_node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": "10.244.3.0/24"},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status"}]}})
}

impl FakeApi {
    async fn start(respond: Arc<Responder>) -> FakeApi {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let arrived = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                let times = arrived.clone();
                let respond = respond.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&req).into_owned();
                    let path = req.split(' ').nth(1).unwrap_or("").to_owned();
                    let token = req.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        let value = value.trim();
                        (name.eq_ignore_ascii_case("authorization"))
                            .then(|| value.strip_prefix("Bearer ").unwrap_or(value).to_owned())
                    });
                    let reply = respond(&path, token.as_deref());
                    seen.lock().unwrap().push((path, token));
                    times.lock().unwrap().push(std::time::Instant::now());
                    if reply.drop {
                        return;
                    }
                    let mut head = format!(
                        "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for h in &reply.headers {
                        head.push_str(h);
                        head.push_str("\r\n");
                    }
                    head.push_str("\r\n");
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&reply.body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        FakeApi {
            port,
            ca_pem: cert.pem(),
            requests,
            arrivals,
            _task: task,
        }
    }

    /// Serves the fixture pages of pods and nodes to `TOKEN`, 403 to anyone else.
    async fn paged() -> FakeApi {
        FakeApi::start(Arc::new(|path: &str, token: Option<&str>| {
            let page2 = path.contains("continue=");
            if token != Some(TOKEN) {
                Reply::forbidden()
            } else if is_nodes(path) {
                Reply::ok(fixture(if page2 {
                    "nodes-page2.json"
                } else {
                    "nodes-page1.json"
                }))
            } else if page2 {
                Reply::ok(fixture("pods-page2.json"))
            } else {
                Reply::ok(fixture("pods-page1.json"))
            }
        }))
        .await
    }

    /// Serves `body` as the pods and a NodeList of the nodes its pods are on to `TOKEN`,
    /// 403 to anyone else.
    async fn serving(body: Vec<u8>) -> FakeApi {
        let nodes = node_list(&pod_nodes(&body));
        FakeApi::serving_cluster(body, nodes).await
    }

    /// Serves `pods` and `nodes` to `TOKEN`, 403 to anyone else.
    async fn serving_cluster(pods: Vec<u8>, nodes: Vec<u8>) -> FakeApi {
        FakeApi::start(Arc::new(move |path: &str, token: Option<&str>| {
            if token != Some(TOKEN) {
                Reply::forbidden()
            } else if is_nodes(path) {
                Reply::ok(nodes.clone())
            } else {
                Reply::ok(pods.clone())
            }
        }))
        .await
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// When each request arrived, in order.
    fn arrivals(&self) -> Vec<std::time::Instant> {
        self.arrivals.lock().unwrap().clone()
    }

    /// A kubeconfig for this server whose user is `user` (YAML flow mapping), with the CA
    /// in a file next to it (a relative path, as kubectl allows).
    fn kubeconfig(&self, dir: &Path, ca_pem: &str, user: &str) -> PathBuf {
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
                 contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n\
                 clusters: [{{name: test, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority: ca.pem}}}}]\n\
                 users: [{{name: test, user: {user}}}]\n",
                self.port
            ),
        )
        .unwrap();
        path
    }

    fn token_kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        self.kubeconfig(dir, &self.ca_pem, &format!("{{token: {token}}}"))
    }
}

fn discovery(credentials: Credentials) -> KubeDiscovery {
    KubeDiscovery {
        namespace: "kube-system".into(),
        selector: SELECTOR.into(),
        port: 50051,
        credentials,
        timeout: std::time::Duration::from_secs(10),
    }
}

/// [`discovery`] with the kubeconfig at `kubeconfig`, run once.
async fn discover_with(kubeconfig: PathBuf) -> Result<Vec<NodeEndpoint>, KubeError> {
    let found = discovery(Credentials::Kubeconfig(kubeconfig))
        .discover()
        .await?;
    assert!(
        found.coverage_unverified.is_empty(),
        "{:?}",
        found.coverage_unverified
    );
    Ok(found.endpoints)
}

/// The query parameters of a request path.
fn query(path: &str) -> Vec<(String, String)> {
    let q = path.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn discovery_pages_through_the_api_and_names_not_ready_nodes() {
    let api = FakeApi::paged().await;
    let dir = tempfile::tempdir().unwrap();
    let kd = discovery(Credentials::Kubeconfig(
        api.token_kubeconfig(dir.path(), TOKEN),
    ));
    let found = discovery::discover(&[Source::Kube(kd.clone())])
        .await
        .unwrap();
    assert!(found.coverage_unverified.is_empty());
    let got: Vec<(&str, &str, bool)> = found
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.expected_node.as_deref().unwrap(),
                e.not_ready.is_some(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10.244.1.17:50051", "worker-a", false),
            ("10.244.2.9:50051", "worker-b", false),
            ("[fd00:10:244:5::7]:50051", "worker-e", false),
            ("pod/kube-system/autofs-agent-9pl3v", "worker-c", true),
            // The nodes of both node pages without an agent pod, in name order.
            ("node/control-plane-1", "control-plane-1", true),
            ("node/gpu-1", "gpu-1", true),
            ("node/worker-d", "worker-d", true),
            ("node/worker-f", "worker-f", true),
        ]
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for (i, (path, token)) in requests.iter().enumerate() {
        let collection = if i < 2 {
            "/api/v1/namespaces/kube-system/pods?"
        } else {
            "/api/v1/nodes?"
        };
        assert!(path.starts_with(collection), "{path}");
        assert_eq!(token.as_deref(), Some(TOKEN));
    }
    let nodes_first = query(&requests[2].0);
    assert!(
        nodes_first.contains(&("limit".into(), "500".into()))
            && !nodes_first
                .iter()
                .any(|(k, _)| k == "labelSelector" || k == "continue"),
        "{nodes_first:?}"
    );
    assert!(
        query(&requests[3].0)
            .iter()
            .any(|(k, v)| k == "continue" && v.starts_with("eyJ2Ij")),
        "{requests:?}"
    );
    let first = query(&requests[0].0);
    assert!(
        first.contains(&(
            "labelSelector".into(),
            "app.kubernetes.io%2Fname%3Dautofs-agent".into()
        )),
        "{first:?}"
    );
    assert!(first.contains(&("limit".into(), "500".into())), "{first:?}");
    assert!(!first.iter().any(|(k, _)| k == "continue"), "{first:?}");
    let second = query(&requests[1].0);
    assert!(
        second
            .iter()
            .any(|(k, v)| k == "continue" && v.starts_with("eyJ2Ij")),
        "{second:?}"
    );

    // A wrong token: RBAC's answer comes through with its status and message.
    let dir2 = tempfile::tempdir().unwrap();
    let bad = KubeDiscovery {
        credentials: Credentials::Kubeconfig(api.token_kubeconfig(dir2.path(), "wrong")),
        ..kd
    };
    let e = bad.discover().await.unwrap_err();
    assert!(matches!(e, KubeError::Api { code: 403, .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("HTTP 403 Forbidden") && e.contains("cannot list resource \"pods\""),
        "{e}"
    );
}

#[tokio::test]
async fn the_embedders_client_is_used_as_given() {
    let api = FakeApi::paged().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kube::config::Kubeconfig::read_from(api.token_kubeconfig(dir.path(), TOKEN)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let found = discovery(Credentials::Client(client))
        .discover()
        .await
        .unwrap();
    assert_eq!(found.endpoints.len(), 8);
}

#[tokio::test]
async fn answers_that_are_not_pod_lists_are_refused() {
    for (body, needle) in [
        (fixture("not-a-podlist.json"), "ConfigMapList"),
        (b"<html>".to_vec(), "expected value"),
        (br#"{"kind":"PodList","metadata":{}}"#.to_vec(), "items"),
    ] {
        let api = FakeApi::serving(body).await;
        let dir = tempfile::tempdir().unwrap();
        let e = discovery(Credentials::Kubeconfig(
            api.token_kubeconfig(dir.path(), TOKEN),
        ))
        .discover()
        .await
        .unwrap_err();
        let chain = error_chain(&e);
        assert!(chain.contains(needle), "{needle}: {chain}");
    }

    // An empty list names the selector.
    let api = FakeApi::serving(br#"{"kind":"PodList","metadata":{},"items":[]}"#.to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let e = discovery::discover(&[Source::Kube(discovery(Credentials::Kubeconfig(
        api.token_kubeconfig(dir.path(), TOKEN),
    )))])
    .await
    .unwrap_err();
    assert!(
        matches!(e, DiscoveryError::Kube(KubeError::NoPods { .. })),
        "{e:?}"
    );
    assert!(error_chain(&e).contains(SELECTOR), "{e}");
}

#[tokio::test]
async fn an_untrusted_api_server_is_refused() {
    let api = FakeApi::paged().await;
    let other = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), &other, &format!("{{token: {TOKEN}}}"));
    let e = discover_with(kc).await.unwrap_err();
    assert!(matches!(e, KubeError::Request { .. }), "{e:?}");
    let chain = error_chain(&e);
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    assert!(api.requests().is_empty());
}

/// A shell script in `dir` named `name`; run through `/bin/sh` so that no test ever executes
/// a file it has just written (another thread's fork could still hold it open: ETXTBSY).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

/// An exec credential plugin that prints [`TOKEN`] as an ExecCredential on stdout, as
/// `aws eks get-token` or `gke-gcloud-auth-plugin` do.
fn token_plugin(dir: &Path) -> PathBuf {
    script(
        dir,
        "token-plugin",
        &format!(
            "echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{TOKEN}\"}}}}'"
        ),
    )
}

/// A kubeconfig `user` running an exec credential plugin.
fn exec_user(plugin: &Path) -> String {
    format!(
        "{{exec: {{apiVersion: client.authentication.k8s.io/v1beta1, command: /bin/sh, args: ['{}'], interactiveMode: Never}}}}",
        plugin.display()
    )
}

#[tokio::test]
async fn an_exec_credential_plugin_provides_the_bearer_token() {
    let api = FakeApi::paged().await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = token_plugin(dir.path());
    let kc = api.kubeconfig(dir.path(), &api.ca_pem, &exec_user(&plugin));
    let eps = discover_with(kc).await.unwrap();
    assert_eq!(eps.len(), 8);
    assert!(
        api.requests()
            .iter()
            .all(|(_, token)| token.as_deref() == Some(TOKEN)),
        "{:?}",
        api.requests()
    );
}

#[tokio::test]
async fn an_unreadable_token_file_is_a_credentials_error_naming_it() {
    let api = FakeApi::paged().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), &api.ca_pem, "{tokenFile: no-such-token}");
    let e = discover_with(kc).await.unwrap_err();
    assert!(matches!(e, KubeError::Credentials { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-token"), "{e}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

/// Runs the real `autofs-controller` with only the given environment.
fn controller_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::run_logged(
        common::controller_command(args)
            .env_clear()
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn"),
    )
}

#[tokio::test]
async fn a_failing_exec_plugin_is_named_and_the_cli_exits_2() {
    let api = FakeApi::paged().await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = script(
        dir.path(),
        "gke-auth-plugin",
        "echo 'error: the refresh token has expired, log in again' >&2; exit 1",
    );
    let kc = api.kubeconfig(dir.path(), &api.ca_pem, &exec_user(&plugin));
    let e = discover_with(kc.clone()).await.unwrap_err();
    assert!(matches!(e, KubeError::Credentials { .. }), "{e:?}");
    let chain = error_chain(&e);
    assert!(chain.contains("exec plugin `/bin/sh /"), "{chain}");
    assert!(chain.contains("gke-auth-plugin"), "{chain}");
    assert!(chain.contains("refresh token has expired"), "{chain}");

    let out = tokio::task::spawn_blocking(move || {
        controller_env(
            &[
                "collect",
                "--kube-selector",
                SELECTOR,
                "--kubeconfig",
                kc.to_str().unwrap(),
            ],
            &[("HOME", "/nonexistent")],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exec plugin") && err.contains("gke-auth-plugin"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

/// A PodList with a running agent at 127.0.0.1 on `node`, a pending pod and a running one
/// without an IP.
fn cluster_pods(node: &str) -> Vec<u8> {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "agent-a", "namespace": "autofs-inspector"},
         "spec": {"nodeName": node}, "status": {"phase": "Running", "podIP": "127.0.0.1"}},
        {"metadata": {"name": "agent-c", "namespace": "autofs-inspector"},
         "spec": {"nodeName": "worker-c"}, "status": {"phase": "Pending", "containerStatuses": [
            {"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}},
        {"metadata": {"name": "agent-d", "namespace": "autofs-inspector"},
         "spec": {"nodeName": "worker-d"}, "status": {"phase": "Running"}},
    ]})
    .to_string()
    .into_bytes()
}

/// `collect --output json` of the CLI: the agent answered, the two not-ready nodes failed
/// with their pods' phase and reason, exit 3 (partial).
fn assert_partial_collect(out: &Output, node: &str) {
    assert_eq!(out.status.code(), Some(3));
    let doc = common::json(out);
    let nodes = doc["nodes"].as_array().unwrap();
    let entry = |name: &str| {
        nodes
            .iter()
            .find(|n| n["node"] == name)
            .unwrap_or_else(|| panic!("no node {name} in {doc}"))
    };
    assert_eq!(entry(node)["ok"], true, "{doc}");
    let c = entry("worker-c");
    assert_eq!(c["ok"], false);
    assert_eq!(c["attempts"], 0);
    let err = c["error"].as_str().unwrap();
    assert!(
        err.contains("not ready: agent pod is Pending (ContainerCreating)"),
        "{err}"
    );
    let d = entry("worker-d")["error"].as_str().unwrap().to_owned();
    assert!(d.contains("no pod IP yet"), "{d}");
    assert_eq!(doc["failed"].as_array().unwrap().len(), 2, "{doc}");
}

#[test]
fn cli_finds_agents_with_an_exec_plugin_and_reports_pods_that_are_not_ready() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = start_agent(None, "worker-kube-exec", "127.0.0.1:0", &[]);
    let api = rt.block_on(FakeApi::serving(cluster_pods(&agent.node)));
    let dir = tempfile::tempdir().unwrap();
    let plugin = token_plugin(dir.path());
    let kc = api.kubeconfig(dir.path(), &api.ca_pem, &exec_user(&plugin));
    let port = agent.grpc.port().to_string();
    let out = controller_env(
        &[
            "collect",
            "--kube-selector",
            "app=autofs-agent",
            "--kube-port",
            &port,
            "--output",
            "json",
        ],
        &[
            ("KUBECONFIG", kc.to_str().unwrap()),
            ("HOME", "/nonexistent"),
        ],
    );
    assert_partial_collect(&out, &agent.node);
    let requests = api.requests();
    assert!(
        requests[0]
            .0
            .starts_with("/api/v1/namespaces/autofs-inspector/pods?"),
        "{requests:?}"
    );
}

#[test]
fn cli_uses_in_cluster_service_account_credentials() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = start_agent(None, "worker-kube-sa", "127.0.0.1:0", &[]);
    let api = rt.block_on(FakeApi::serving(cluster_pods(&agent.node)));
    let sa = tempfile::tempdir().unwrap();
    std::fs::write(sa.path().join("token"), TOKEN).unwrap();
    std::fs::write(sa.path().join("ca.crt"), &api.ca_pem).unwrap();
    std::fs::write(sa.path().join("namespace"), "autofs-inspector").unwrap();
    // The service account directory is a fixed path: give the controller its own mount
    // namespace with a private /run holding it (/var/run links there).
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; d=/run/secrets/kubernetes.io/serviceaccount; \
         mkdir -p $d; cp {sa}/token {sa}/ca.crt {sa}/namespace $d/; exec \"$@\"",
        sa = sa.path().display()
    );
    let port = agent.grpc.port().to_string();
    let api_port = api.port.to_string();
    let bin = env!("CARGO_BIN_EXE_autofs-controller");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
        bin,
    ])
    .args([
        "collect",
        "--kube-selector",
        "app=autofs-agent",
        "--kube-port",
        &port,
        "--output",
        "json",
    ])
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("HOME", "/nonexistent")
    .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    .env("KUBERNETES_SERVICE_PORT", &api_port)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null());
    let out = common::run_logged(&mut cmd);
    assert_partial_collect(&out, &agent.node);
    let requests = api.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|(_, t)| t.as_deref() == Some(TOKEN)),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_waits_for_agent_pods_that_are_not_ready_and_follows_them_once_they_run() {
    // Only a pending pod and a running one without an IP: nothing can be watched yet. The
    // watch says so for each and keeps looking (it once exited 0, as after Ctrl-C, then 2).
    let port = common::gate::free_port();
    let pid = std::process::id();
    let (c_node, d_node) = (format!("worker-c-{pid}"), format!("worker-d-{pid}"));
    let pods_with = |d_ip: Option<&str>| {
        let mut d = json!({"metadata": {"name": "agent-d", "namespace": "autofs-inspector"},
            "spec": {"nodeName": d_node}, "status": {"phase": "Running"}});
        if let Some(ip) = d_ip {
            d["status"]["podIP"] = json!(ip);
        }
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
            {"metadata": {"name": "agent-c", "namespace": "autofs-inspector"},
             "spec": {"nodeName": c_node}, "status": {"phase": "Pending"}},
            d,
        ]})
        .to_string()
        .into_bytes()
    };
    let api = LiveApi::start(pods_with(None), node_list(&[&c_node, &d_node])).await;
    let gate = api.gate("watch", port, &["--refresh-interval", "1h"]);
    // Each node's line, in the order their tasks print them.
    let (c_line, d_line) = (
        format!("node {c_node} (pod/autofs-inspector/agent-c): not ready: "),
        format!("node {d_node} (pod/autofs-inspector/agent-d): not ready: "),
    );
    let either = (c_line.clone(), d_line.clone());
    let (gate, first) = next_line(gate, "saying that a pod is not ready", move |l| {
        l.starts_with(&either.0) || l.starts_with(&either.1)
    })
    .await;
    let other = if first.starts_with(&c_line) {
        d_line
    } else {
        c_line
    };
    let (gate, second) = next_line(gate, "saying that the other pod is not ready", move |l| {
        l.starts_with(&other)
    })
    .await;
    let lines = [first, second];
    let c = lines.iter().find(|l| l.contains("agent-c")).unwrap();
    let d = lines.iter().find(|l| l.contains("agent-d")).unwrap();
    assert!(c.ends_with("; not watched"), "{c}");
    assert!(d.contains("no pod IP"), "{d}");

    // D's pod gets its IP and its agent serves: looked for again while not ready, it is found.
    let d_addr = format!("127.0.0.12:{port}");
    let _d = start_agent(None, &d_node, &d_addr, &[]);
    api.set_pods(pods_with(Some("127.0.0.12")));
    let want = format!("agent at {d_addr} (node {d_node}, pod autofs-inspector/agent-d)");
    let (gate, added) = next_line(gate, "saying that D's agent was discovered", move |l| {
        l.starts_with(&want)
    })
    .await;
    assert!(added.ends_with("discovered; watching it"), "{added}");
    let want = format!("{d_node} connected ({d_addr}, ");
    next_line(gate, "saying that D is watched", move |l| {
        l.starts_with(&want)
    })
    .await;
}

#[test]
fn nodes_without_an_agent_pod_become_not_ready_endpoints_that_say_why() {
    let mut pods = PodPage::default();
    pods.add(&pods_of(&fixture("pods-page1.json")), 50051)
        .unwrap();
    pods.add(&pods_of(&fixture("pods-page2.json")), 50051)
        .unwrap();
    let mut nodes = NodePage::default();
    nodes.add(&nodes_of(&fixture("nodes-page1.json"))).unwrap();
    nodes.add(&nodes_of(&fixture("nodes-page2.json"))).unwrap();
    assert_eq!(nodes.len(), 8);
    let missing = nodes.without_agent(&pods.nodes(), &pods.terminating);
    let missing: Vec<(&str, &str)> = missing
        .iter()
        .map(|e| (e.address.as_str(), e.not_ready.as_deref().unwrap()))
        .collect();
    const WHY: &str = "no autofs-agent pod on this node (taints/nodeSelector? the DaemonSet's tolerations, nodeSelector or affinity may leave it out, or its pod is not created yet";
    assert_eq!(
        missing,
        [
            (
                "node/control-plane-1",
                &*format!("{WHY}; node taints: node-role.kubernetes.io/control-plane:NoSchedule)")
            ),
            // PreferNoSchedule keeps no DaemonSet pod away: not listed.
            (
                "node/gpu-1",
                &*format!("{WHY}; node taints: nvidia.com/gpu=present:NoSchedule)")
            ),
            (
                "node/worker-d",
                "no agent pod on this node but pod kube-system/autofs-agent-zz81q, which is terminating"
            ),
            (
                "node/worker-f",
                &*format!(
                    "{WHY}; node taints: node.kubernetes.io/unreachable:NoExecute, node.kubernetes.io/unreachable:NoSchedule, node.kubernetes.io/unschedulable:NoSchedule); node is NotReady (Ready is Unknown: NodeStatusUnknown: Kubelet stopped posting node status.), unschedulable (cordoned)"
                )
            ),
        ]
    );
    assert_eq!(nodes.state("worker-a"), None);
    assert!(nodes.state("worker-f").unwrap().starts_with("NotReady"));
}

fn pods_of(list: &[u8]) -> Vec<Pod> {
    pods(list)
}

fn nodes_of(list: &[u8]) -> Vec<Node> {
    let list: Value = serde_json::from_slice(list).unwrap();
    serde_json::from_value(list["items"].clone()).unwrap()
}

/// A PodList with one running agent at 127.0.0.1 on `node`.
fn one_agent(node: &str) -> Vec<u8> {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "agent-a", "namespace": "autofs-inspector"},
         "spec": {"nodeName": node}, "status": {"phase": "Running", "podIP": "127.0.0.1"}},
    ]})
    .to_string()
    .into_bytes()
}

/// `collect` of the real CLI with the exec-plugin kubeconfig of `api` and the agent's port;
/// `extra` flags after.
fn cli_collect(api: &FakeApi, agent_port: u16, dir: &Path, extra: &[&str]) -> Output {
    let plugin = token_plugin(dir);
    let kc = api.kubeconfig(dir, &api.ca_pem, &exec_user(&plugin));
    let port = agent_port.to_string();
    let mut args = vec![
        "collect",
        "--kube-selector",
        "app=autofs-agent",
        "--kube-port",
        &port,
    ];
    args.extend_from_slice(extra);
    controller_env(
        &args,
        &[
            ("KUBECONFIG", kc.to_str().unwrap()),
            ("HOME", "/nonexistent"),
        ],
    )
}

#[test]
fn cli_reports_a_node_without_an_agent_pod_as_partial() {
    // The DaemonSet has no pod on a tainted GPU node: it used to be left out, and collect
    // said the cluster was complete (exit 0).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = start_agent(None, "worker-kube-nodes", "127.0.0.1:0", &[]);
    let mut gpu = ready_node("gpu-2");
    gpu["spec"]["taints"] =
        json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]);
    // A Windows node has no autofs and nothing CRIU could dump: not a missing agent.
    let mut windows = ready_node("win-1");
    windows["metadata"]["labels"]["kubernetes.io/os"] = json!("windows");
    let nodes = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                       "items": [ready_node(&agent.node), gpu, windows]})
    .to_string()
    .into_bytes();
    let api = rt.block_on(FakeApi::serving_cluster(one_agent(&agent.node), nodes));
    let dir = tempfile::tempdir().unwrap();
    let out = cli_collect(&api, agent.grpc.port(), dir.path(), &["--output", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let doc = common::json(&out);
    assert_eq!(doc["complete"], false, "{doc}");
    let failed = doc["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{doc}");
    assert_eq!(failed[0]["node"], "gpu-2");
    assert_eq!(failed[0]["endpoint"], "node/gpu-2");
    let err = failed[0]["error"].as_str().unwrap();
    assert!(
        err.contains("not ready: no autofs-agent pod on this node (taints/nodeSelector?")
            && err.contains("node taints: nvidia.com/gpu=present:NoSchedule"),
        "{err}"
    );
    let ok: Vec<&Value> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["ok"] == true)
        .collect();
    assert_eq!(ok.len(), 1, "{doc}");
    assert_eq!(ok[0]["node"], agent.node.as_str());
    assert_eq!(doc["coverage_unverified"], json!([]), "{doc}");

    let out = cli_collect(&api, agent.grpc.port(), dir.path(), &[]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PARTIAL: 1 node failed:\n  node gpu-2 (node/gpu-2): not ready: no autofs-agent pod on this node"),
        "{text}"
    );
}

#[test]
fn cli_without_rights_on_nodes_warns_once_and_says_coverage_is_unverified() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = start_agent(None, "worker-kube-norbac", "127.0.0.1:0", &[]);
    let pods = one_agent(&agent.node);
    let api = rt.block_on(FakeApi::start(Arc::new(
        move |path: &str, token: Option<&str>| {
            if token != Some(TOKEN) {
                Reply::forbidden()
            } else if is_nodes(path) {
                Reply::new("403 Forbidden", fixture("nodes-forbidden.json"))
            } else {
                Reply::ok(pods.clone())
            }
        },
    )));
    let dir = tempfile::tempdir().unwrap();
    const WARNING: &str = "cannot list nodes: coverage of nodes without an agent pod is unknown";

    let out = cli_collect(&api, agent.grpc.port(), dir.path(), &["--output", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(WARNING).count(), 1, "{err}");
    let doc = common::json(&out);
    assert_eq!(doc["complete"], false, "{doc}");
    assert_eq!(doc["failed"], json!([]), "{doc}");
    let gaps = doc["coverage_unverified"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{doc}");
    let gap = gaps[0].as_str().unwrap();
    assert!(
        gap.starts_with(WARNING) && gap.contains("cannot list resource \"nodes\""),
        "{gap}"
    );
    assert_eq!(doc["nodes"][0]["ok"], true, "{doc}");

    let out = cli_collect(&api, agent.grpc.port(), dir.path(), &[]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "PARTIAL: coverage unverified, nodes may be missing: {WARNING}"
        )),
        "{text}"
    );
    assert!(!text.contains("node failed"), "{text}");
}

#[tokio::test]
async fn load_shedding_is_retried_after_retry_after_then_succeeds() {
    // Pods: a 429 from API Priority and Fairness (plain text, Retry-After: 2), then a 500;
    // nodes: a dropped connection. Each is retried; kube-rs's own retry covered only the 429.
    let calls = Arc::new(Mutex::new(0u32));
    let node_calls = Arc::new(Mutex::new(0u32));
    let api = FakeApi::start(Arc::new(move |path: &str, _: Option<&str>| {
        if is_nodes(path) {
            let mut n = node_calls.lock().unwrap();
            *n += 1;
            return if *n == 1 {
                Reply::dropped()
            } else {
                Reply::ok(node_list(&["worker-a", "worker-b", "worker-c", "worker-e"]))
            };
        }
        let mut n = calls.lock().unwrap();
        *n += 1;
        match *n {
            1 => Reply {
                headers: vec!["Retry-After: 2".into()],
                ..Reply::new(
                    "429 Too Many Requests",
                    b"Too many requests, please try again later.\n".to_vec(),
                )
            },
            2 => Reply::new(
                "500 Internal Server Error",
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "etcdserver: leader changed", "reason": "InternalError",
                       "code": 500})
                .to_string()
                .into_bytes(),
            ),
            _ if path.contains("continue=") => Reply::ok(fixture("pods-page2.json")),
            _ => Reply::ok(fixture("pods-page1.json")),
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let eps = discover_with(api.token_kubeconfig(dir.path(), TOKEN))
        .await
        .unwrap();
    assert_eq!(eps.len(), 4, "{eps:?}");
    let requests = api.requests();
    let kinds: Vec<bool> = requests.iter().map(|(p, _)| is_nodes(p)).collect();
    assert_eq!(
        kinds,
        [false, false, false, false, true, true],
        "{requests:?}"
    );
    // The server asked for 2 s; the backoff alone would have waited at most 100 ms.
    let arrivals = api.arrivals();
    let waited = arrivals[1] - arrivals[0];
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "retried after {waited:?}"
    );
}

#[tokio::test]
async fn a_retry_after_of_zero_still_backs_off() {
    // "Retry-After: 0" on every 429: retried at once, discovery would hammer an API server
    // that is shedding load with as many requests as the deadline holds.
    let api = FakeApi::start(Arc::new(|_: &str, _: Option<&str>| Reply {
        headers: vec!["Retry-After: 0".into()],
        ..Reply::new("429 Too Many Requests", b"Too many requests\n".to_vec())
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kd = KubeDiscovery {
        timeout: std::time::Duration::from_secs(1),
        ..discovery(Credentials::Kubeconfig(
            api.token_kubeconfig(dir.path(), TOKEN),
        ))
    };
    let e = kd.discover().await.unwrap_err();
    assert!(matches!(e, KubeError::Unavailable { .. }), "{e:?}");
    let arrivals = api.arrivals();
    assert!(arrivals.len() >= 2, "{e}");
    // The backoff's first delay is 100 ms, drawn from its upper half: no retry comes sooner
    // than 50 ms after the answer before it (a lower bound: sleeps never end early).
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= std::time::Duration::from_millis(50),
            "retried after {gap:?} ({} requests within 1s)",
            arrivals.len()
        );
    }
}

#[tokio::test]
async fn an_api_server_failing_forever_is_a_clear_error_within_the_deadline() {
    let api = FakeApi::start(Arc::new(|_: &str, _: Option<&str>| {
        Reply::new(
            "503 Service Unavailable",
            b"upstream connect error or disconnect/reset before headers\n".to_vec(),
        )
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kd = KubeDiscovery {
        timeout: std::time::Duration::from_secs(1),
        ..discovery(Credentials::Kubeconfig(
            api.token_kubeconfig(dir.path(), TOKEN),
        ))
    };
    // A guard against a hang, far beyond the deadline: not a measurement.
    let e = tokio::time::timeout(std::time::Duration::from_secs(60), kd.discover())
        .await
        .expect("discovery must give up by its deadline")
        .unwrap_err();
    let KubeError::Unavailable { attempts, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(*attempts >= 2, "{e}");
    assert_eq!(*attempts as usize, api.requests().len());
    assert_eq!(
        e.to_string(),
        format!(
            "listing pods in namespace kube-system: gave up after {attempts} attempts within 1s: last HTTP 503 Service Unavailable: upstream connect error or disconnect/reset before headers"
        )
    );

    // A 500 with the API's Status, through the CLI: exit 2 and the same sentence.
    let api = FakeApi::start(Arc::new(|_: &str, _: Option<&str>| {
        Reply::new(
            "500 Internal Server Error",
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Internal error occurred: etcdserver: request timed out",
                   "reason": "InternalError", "code": 500})
            .to_string()
            .into_bytes(),
        )
    }))
    .await;
    let kc = api.token_kubeconfig(dir.path(), TOKEN);
    let out = tokio::task::spawn_blocking(move || {
        controller_env(
            &[
                "collect",
                "--kube-selector",
                SELECTOR,
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--timeout",
                "1s",
            ],
            &[("HOME", "/nonexistent")],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listing pods in namespace autofs-inspector: gave up after ")
            && err.contains(" attempts within 1s: last HTTP 500 Internal Server Error: Internal error occurred: etcdserver: request timed out"),
        "{err}"
    );
}

/// A fake API server serving `TOKEN` a pod list the test changes as it goes
/// ([`LiveApi::set_pods`]) and a fixed node list, with a kubeconfig for it.
struct LiveApi {
    _api: FakeApi,
    pods: Arc<Mutex<Vec<u8>>>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl LiveApi {
    async fn start(pods: Vec<u8>, nodes: Vec<u8>) -> LiveApi {
        let pods = Arc::new(Mutex::new(pods));
        let serving = pods.clone();
        let api = FakeApi::start(Arc::new(move |path: &str, token: Option<&str>| {
            if token != Some(TOKEN) {
                Reply::forbidden()
            } else if is_nodes(path) {
                Reply::ok(nodes.clone())
            } else {
                Reply::ok(serving.lock().unwrap().clone())
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.token_kubeconfig(dir.path(), TOKEN);
        LiveApi {
            _api: api,
            pods,
            kubeconfig,
            _dir: dir,
        }
    }

    fn set_pods(&self, pods: Vec<u8>) {
        *self.pods.lock().unwrap() = pods;
    }

    /// The controller running `verb`, discovering through this API agents on `port`, then
    /// `args`.
    fn gate(&self, verb: &str, port: u16, args: &[&str]) -> common::gate::Gate {
        let port = port.to_string();
        let mut all = vec![
            verb,
            "--kube-selector",
            SELECTOR,
            "--kube-port",
            &port,
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        common::gate::Gate::start(&all)
    }
}

/// Reads `gate`'s lines until one satisfies `want`, on a blocking thread: the fake API server
/// runs on the test's runtime.
async fn next_line(
    mut gate: common::gate::Gate,
    what: &'static str,
    want: impl Fn(&str) -> bool + Send + 'static,
) -> (common::gate::Gate, String) {
    tokio::task::spawn_blocking(move || {
        let line = gate.expect(what, want);
        (gate, line)
    })
    .await
    .unwrap()
}

/// A PodList of the agent DaemonSet during a rolling update of `node`'s agent: `old` (a pod
/// IP) running, terminating (`deleting`) or gone (`None`), and its replacement `new`,
/// pending (`None`: no IP yet) or running at that IP.
fn rollout_pods(node: &str, old: Option<(&str, bool)>, new: Option<&str>) -> Vec<u8> {
    let mut items = Vec::new();
    if let Some((ip, deleting)) = old {
        let mut meta = json!({"name": "agent-old", "namespace": "autofs-inspector"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
        items.push(json!({"metadata": meta, "spec": {"nodeName": node},
            "status": {"phase": "Running", "podIP": ip}}));
    }
    items.push(match new {
        None => json!({"metadata": {"name": "agent-new", "namespace": "autofs-inspector"},
            "spec": {"nodeName": node}, "status": {"phase": "Pending", "containerStatuses": [
                {"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
        Some(ip) => json!({"metadata": {"name": "agent-new", "namespace": "autofs-inspector"},
            "spec": {"nodeName": node}, "status": {"phase": "Running", "podIP": ip}}),
    });
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wait_follows_the_node_through_a_rolling_update_of_its_agent_pod() {
    use common::gate::{blocked, free_port};
    let mut blocked = blocked();
    let pid = blocked.sc.init_host_pid().to_string();
    let port = free_port();
    let node = format!("kube-roll-{}", std::process::id());
    let (old_ip, new_ip) = ("127.0.0.8", "127.0.0.9");
    let mut old = start_agent(None, &node, &format!("{old_ip}:{port}"), &[]);
    let api = LiveApi::start(
        rollout_pods(&node, Some((old_ip, false)), None),
        node_list(&[&node]),
    )
    .await;
    let gate = api.gate(
        "check",
        port,
        &["--node", &node, "--pid", &pid, "--wait", "10m"],
    );
    let (old_addr, new_addr) = (format!("{old_ip}:{port}"), format!("{new_ip}:{port}"));
    let want = format!("on node {node}: waiting");
    let (gate, first) = next_line(gate, "with the old agent's first verdict", move |l| {
        l.contains(&want)
    })
    .await;
    assert!(first.starts_with("[1] "), "{first}");

    // The old pod is deleted; its replacement is scheduled but not running yet.
    api.set_pods(rollout_pods(&node, Some((old_ip, true)), None));
    old.kill();
    let (gate, pending) = next_line(gate, "saying that the new pod is not ready", |l| {
        l.contains("not ready: agent pod is Pending (ContainerCreating)")
    })
    .await;
    assert!(pending.starts_with(&format!("node {node}: ")), "{pending}");

    // The new pod runs, at another IP.
    let _new = start_agent(None, &node, &new_addr, &[]);
    api.set_pods(rollout_pods(&node, None, Some(new_ip)));
    let want = format!("its agent moved from {old_addr} to {new_addr}");
    let (gate, moved) = next_line(gate, "saying that the agent moved", move |l| {
        l.contains(&want)
    })
    .await;
    assert!(moved.contains("(a new agent: instance "), "{moved}");
    let (gate, _) = next_line(gate, "with the new agent's first verdict", |l| {
        l.contains("[1] ")
    })
    .await;

    let (code, lines) = tokio::task::spawn_blocking(move || {
        blocked.unblock();
        gate.finish()
    })
    .await
    .unwrap();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains(&format!("on node {node} is migratable now"))),
        "{lines:#?}"
    );
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_node_through_a_rolling_update_of_its_agent_pod() {
    let port = common::gate::free_port();
    let node = format!("kube-wroll-{}", std::process::id());
    let (old_ip, new_ip) = ("127.0.0.10", "127.0.0.11");
    let mut old = start_agent(None, &node, &format!("{old_ip}:{port}"), &[]);
    let api = LiveApi::start(
        rollout_pods(&node, Some((old_ip, false)), None),
        node_list(&[&node]),
    )
    .await;
    // Discovery runs again only because the stream broke and while the new pod is pending.
    let gate = api.gate("watch", port, &["--refresh-interval", "1h"]);
    let (old_addr, new_addr) = (format!("{old_ip}:{port}"), format!("{new_ip}:{port}"));
    let starting = |prefix: String| move |l: &str| l.starts_with(&prefix);
    let (gate, _) = next_line(
        gate,
        "saying that the old agent is watched",
        starting(format!("{node} connected ({old_addr}, ")),
    )
    .await;

    // The old pod is deleted; its replacement is scheduled but not running yet.
    api.set_pods(rollout_pods(&node, Some((old_ip, true)), None));
    old.kill();
    let (gate, removed) = next_line(
        gate,
        "saying that the old pod is not watched any more",
        starting(format!(
            "agent at {old_addr} (node {node}, pod autofs-inspector/agent-old)"
        )),
    )
    .await;
    assert!(
        removed.ends_with("no longer discovered; not watched any more"),
        "{removed}"
    );
    let (gate, pending) = next_line(
        gate,
        "saying that the new pod is not ready",
        starting(format!(
            "node {node} (pod/autofs-inspector/agent-new): not ready: "
        )),
    )
    .await;
    assert!(
        pending.contains("agent pod is Pending (ContainerCreating)"),
        "{pending}"
    );

    // The new pod runs, at another IP: looked for again while it was pending, it is found.
    let _new = start_agent(None, &node, &new_addr, &[]);
    api.set_pods(rollout_pods(&node, None, Some(new_ip)));
    let (gate, added) = next_line(
        gate,
        "saying that the new pod was discovered",
        starting(format!(
            "agent at {new_addr} (node {node}, pod autofs-inspector/agent-new)"
        )),
    )
    .await;
    assert!(added.ends_with("discovered; watching it"), "{added}");
    next_line(
        gate,
        "saying that the new agent is watched",
        starting(format!("{node} connected ({new_addr}, ")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wait_for_a_node_the_cluster_does_not_have_fails_at_once() {
    // The cluster: node `real` runs an agent; node `bare` has none yet (a node being rolled
    // over, or whose pod is not created yet), so a wait for it goes on.
    let port = common::gate::free_port();
    let pid = std::process::id();
    let (real, bare) = (format!("real-{pid}"), format!("bare-{pid}"));
    let _agent = start_agent(None, &real, &format!("127.0.0.14:{port}"), &[]);
    let pods = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "agent-real", "namespace": "autofs-inspector"},
         "spec": {"nodeName": real}, "status": {"phase": "Running", "podIP": "127.0.0.14"}},
    ]})
    .to_string()
    .into_bytes();
    let api = LiveApi::start(pods, node_list(&[&real, &bare])).await;
    // Long enough for the searching wait's first line, short enough that a wait that searches
    // for a name no round can find fails this test soon.
    let wait_for = |node: &str| {
        api.gate(
            "check",
            port,
            &["--node", node, "--pid", "1", "--wait", "2m"],
        )
    };

    // A mistyped name: no such Node, so no round of discovery can find it. It once waited
    // for the whole --wait, printing "not found yet".
    let typo = format!("reall-{pid}");
    let gate = wait_for(&typo);
    let (code, lines, stderr) = tokio::task::spawn_blocking(move || gate.finish_with_stderr())
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("not found yet")),
        "{lines:#?}"
    );
    assert!(
        stderr.contains(&format!(
            "node {typo} is not a node of the cluster: Kubernetes lists 2 Linux node(s), none named so"
        )),
        "{stderr}"
    );

    // A node the cluster has, without an agent now: the wait searches on.
    let want = format!("node {bare}: not found yet: ");
    let (_gate, line) = next_line(
        wait_for(&bare),
        "saying that the node's agent is not found yet",
        move |l| l.starts_with(&want),
    )
    .await;
    assert!(line.contains("discovering again in"), "{line}");
}
