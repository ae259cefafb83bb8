//! End-to-end TLS tests: certificates made in the test with rcgen, the real agent binary with
//! `--tls-cert/--tls-key` (and `--tls-client-ca` for mutual TLS), real tonic clients.

mod common;

use std::path::{Path, PathBuf};

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
use autofs_testkit::pki::Ca;
use common::{Agent, WAIT};
use rcgen::ExtendedKeyUsagePurpose;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Certificates of one test, written where the agent can read them.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("autofs-inspector test CA");
        let (cert, key) = ca.leaf(
            "autofs-agent",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let write = |name: &str, text: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            server_cert: write("server.pem", &cert),
            server_key: write("server.key", &key),
            client_ca: write("ca.pem", &ca.pem),
            ca,
            _dir: dir,
        }
    }

    fn agent(&self, mutual: bool) -> Agent {
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let mut args = vec![
            "--tls-cert".to_owned(),
            path(&self.server_cert),
            "--tls-key".to_owned(),
            path(&self.server_key),
        ];
        if mutual {
            args.extend(["--tls-client-ca".to_owned(), path(&self.client_ca)]);
        }
        Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// TLS settings of a client that trusts `ca_pem`, optionally with an identity.
fn client_tls(ca_pem: &str, identity: Option<&(String, String)>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

/// GetNodeInfo over a fresh connection with `tls`; any failure (handshake or RPC) as text.
async fn node_info(
    agent: &Agent,
    tls: Option<ClientTlsConfig>,
) -> Result<v1::GetNodeInfoResponse, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", agent.grpc))
        .unwrap()
        .connect_timeout(WAIT)
        .timeout(WAIT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("{e:?}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    AutofsInspectorClient::new(channel)
        .get_node_info(v1::GetNodeInfoRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("rpc: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca() {
    let pki = Pki::new();
    let agent = pki.agent(true);
    let good = pki.ca.leaf(
        "controller",
        &["controller"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let other_ca = Ca::new("someone else's CA");
    let stranger = other_ca.leaf(
        "controller",
        &["controller"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let info = node_info(&agent, Some(client_tls(&pki.ca.pem, Some(&good))))
        .await
        .expect("a client with a certificate of the client CA is served");
    assert_eq!(info.node, agent.node);

    // ListMounts works too (and streams over TLS).
    let channel = Endpoint::from_shared(format!("https://{}", agent.grpc))
        .unwrap()
        .tls_config(client_tls(&pki.ca.pem, Some(&good)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AutofsInspectorClient::new(channel);
    common::list(&mut client, v1::ListMountsRequest::default())
        .await
        .expect("ListMounts over mutual TLS");

    let refused = [
        ("no client certificate", Some(client_tls(&pki.ca.pem, None))),
        (
            "a certificate from another CA",
            Some(client_tls(&pki.ca.pem, Some(&stranger))),
        ),
        ("plaintext", None),
    ];
    for (what, tls) in refused {
        let result = node_info(&agent, tls).await;
        assert!(result.is_err(), "{what}: served {result:?}");
    }
    // Still serving the good client after the refusals.
    node_info(&agent, Some(client_tls(&pki.ca.pem, Some(&good))))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_client_ca_serves_clients_without_a_certificate() {
    let pki = Pki::new();
    let agent = pki.agent(false);
    let info = node_info(&agent, Some(client_tls(&pki.ca.pem, None)))
        .await
        .expect("server-only TLS needs no client certificate");
    assert_eq!(info.node, agent.node);
    assert!(agent.log_text().contains(r#""tls":true,"mtls":false"#));

    // A client that does not trust the agent's CA refuses it; plaintext gets nothing.
    let other = Ca::new("someone else's CA");
    assert!(
        node_info(&agent, Some(client_tls(&other.pem, None)))
            .await
            .is_err()
    );
    assert!(node_info(&agent, None).await.is_err());
}
