//! Kubernetes API discovery (feature `kube`): PodList parsing against recorded API responses
//! (tests/fixtures/kube), kubeconfig handling, and the whole discovery against a tiny HTTPS
//! API server (rustls, rcgen certificates) serving those responses page by page.
#![cfg(feature = "kube")]

use std::path::Path;
use std::sync::{Arc, Mutex};

use autofs_controller::discovery::kube::{ApiConfig, KubeDiscovery, KubeError, parse_pod_list};
use autofs_controller::discovery::{self, Source};
use rcgen::{CertificateParams, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kube")
            .join(name),
    )
    .unwrap()
}

#[test]
fn running_pods_become_endpoints_expecting_their_node() {
    let page = parse_pod_list(&fixture("pods-page1.json"), 50051).unwrap();
    let got: Vec<(&str, Option<&str>, &str)> = page
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.expected_node.as_deref(),
                e.origin.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "10.244.1.17:50051",
                Some("worker-a"),
                "pod kube-system/autofs-agent-4m9sd"
            ),
            (
                "10.244.2.9:50051",
                Some("worker-b"),
                "pod kube-system/autofs-agent-7xq2k"
            ),
        ]
    );
    assert!(
        page.continue_token
            .as_deref()
            .unwrap()
            .starts_with("eyJ2Ij")
    );

    let page = parse_pod_list(&fixture("pods-page2.json"), 7).unwrap();
    assert_eq!(page.endpoints.len(), 1);
    assert_eq!(page.endpoints[0].address, "[fd00:10:244:5::7]:7");
    assert_eq!(page.endpoints[0].expected_node.as_deref(), Some("worker-e"));
    assert_eq!(
        page.skipped,
        [
            "kube-system/autofs-agent-9pl3v: phase Pending",
            "kube-system/autofs-agent-zz81q: terminating",
        ]
    );
    assert!(page.continue_token.is_none());
}

#[test]
fn other_documents_are_malformed_pod_lists() {
    for (body, needle) in [
        (fixture("not-a-podlist.json"), "ConfigMapList"),
        (fixture("forbidden.json"), "Status"),
        (b"<html>".to_vec(), "expected value"),
        (br#"{"kind":"PodList","items":[{"metadata":{"name":"p"},"spec":{"nodeName":"n"},"status":{"phase":"Running","podIP":"nope"}}]}"#.to_vec(), "nope"),
    ] {
        let e = parse_pod_list(&body, 1).unwrap_err();
        assert!(matches!(e, KubeError::Parse(_)), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn kubeconfig_current_context_with_relative_ca_and_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let kc = "apiVersion: v1\nkind: Config\ncurrent-context: prod\n\
        contexts:\n- name: dev\n  context: {cluster: dev, user: dev}\n\
        - name: prod\n  context:\n    cluster: prod\n    user: ops\n    namespace: kube-system\n\
        clusters:\n- name: prod\n  cluster:\n    server: https://10.0.0.1:6443/\n    certificate-authority: ca.pem\n\
        users:\n- name: ops\n  user:\n    token: s3cret\n";
    let api = ApiConfig::from_kubeconfig(kc, dir.path()).unwrap();
    assert_eq!(api.server, "https://10.0.0.1:6443");
    assert_eq!(api.token.as_deref(), Some("s3cret"));
    assert!(api.ca_pem.starts_with(b"-----BEGIN"));

    for (text, needle) in [
        ("current-context: x\ncontexts: []\n", "no context `x`"),
        ("clusters: []\n", "no current-context"),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: [{name: k, cluster: {server: 'https://a', insecure-skip-tls-verify: true}}]\n",
            "insecure-skip-tls-verify",
        ),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: [{name: k, cluster: {server: 'https://a', certificate-authority-data: 'QQ=='}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n",
            "exec",
        ),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: [{name: k, cluster: {server: 'http://a', certificate-authority-data: 'QQ=='}}]\n",
            "https://",
        ),
        ("[not yaml", "kubeconfig"),
    ] {
        let e = ApiConfig::from_kubeconfig(text, dir.path()).unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}

/// A fake API server: serves page 1, then page 2 when `continue` is given, or 403 without the
/// bearer token; records the request paths.
async fn fake_api(token: &'static str) -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca_pem = cert.pem();
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
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let path = req.split(' ').nth(1).unwrap().to_owned();
                seen.lock().unwrap().push(path.clone());
                let authorized = req
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {token}")));
                let (status, body) = if !authorized {
                    ("403 Forbidden", fixture("forbidden.json"))
                } else if path.contains("continue=") {
                    ("200 OK", fixture("pods-page2.json"))
                } else {
                    ("200 OK", fixture("pods-page1.json"))
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca_pem, paths)
}

fn kubeconfig(dir: &Path, port: u16, ca_pem: &str, token: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n\
             clusters: [{{name: test, cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority: ca.pem}}}}]\n\
             users: [{{name: test, user: {{token: {token}}}}}]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn discovery_pages_through_the_api_and_keeps_running_pods() {
    let (port, ca, paths) = fake_api("t0ken").await;
    let dir = tempfile::tempdir().unwrap();
    let kd = KubeDiscovery {
        namespace: "kube-system".into(),
        selector: "app.kubernetes.io/name=autofs-agent".into(),
        port: 50051,
        kubeconfig: Some(kubeconfig(dir.path(), port, &ca, "t0ken")),
    };
    let eps = discovery::discover(&[Source::Kube(kd.clone())])
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = eps
        .iter()
        .map(|e| (e.address.as_str(), e.expected_node.as_deref().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("10.244.1.17:50051", "worker-a"),
            ("10.244.2.9:50051", "worker-b"),
            ("[fd00:10:244:5::7]:50051", "worker-e"),
        ]
    );
    let paths = paths.lock().unwrap().clone();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert_eq!(
        paths[0],
        "/api/v1/namespaces/kube-system/pods?labelSelector=app.kubernetes.io%2Fname%3Dautofs-agent&limit=500"
    );
    assert!(paths[1].contains("&continue=eyJ2Ij"), "{paths:?}");

    // A wrong token: the API's own message comes through.
    let dir2 = tempfile::tempdir().unwrap();
    let bad = KubeDiscovery {
        kubeconfig: Some(kubeconfig(dir2.path(), port, &ca, "wrong")),
        ..kd
    };
    let e = bad.discover().await.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 403") && e.contains("cannot list resource"),
        "{e}"
    );
}

#[tokio::test]
async fn an_untrusted_api_server_is_refused() {
    let (port, _ca, _) = fake_api("t0ken").await;
    let other = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    let dir = tempfile::tempdir().unwrap();
    let kd = KubeDiscovery {
        namespace: "kube-system".into(),
        selector: "a=b".into(),
        port: 1,
        kubeconfig: Some(kubeconfig(dir.path(), port, &other, "t0ken")),
    };
    let e = kd.discover().await.unwrap_err().to_string();
    assert!(e.contains("TLS"), "{e}");
}
