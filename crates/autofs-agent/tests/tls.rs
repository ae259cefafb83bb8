//! End-to-end TLS tests: certificates made in the test with rcgen, the real agent binary with
//! `--tls-cert/--tls-key` (and `--tls-client-ca` for mutual TLS), real tonic clients.

mod common;

use std::path::PathBuf;

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
use autofs_testkit::agent::AgentBuilder;
use autofs_testkit::pki::Ca;
use common::{Agent, HANG_GUARD};
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

    /// The agent serving TLS with the server certificate.
    fn server(&self) -> AgentBuilder {
        Agent::builder().tls(&self.server_cert, &self.server_key)
    }

    fn agent(&self, mutual: bool) -> Agent {
        let builder = self.server();
        Agent::from_builder(if mutual {
            builder.tls_client_ca(&self.client_ca)
        } else {
            builder
        })
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
        .connect_timeout(HANG_GUARD)
        .timeout(HANG_GUARD);
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

/// Client certificates of the refusal matrix, signed on the spot.
mod matrix {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
        KeyPair, KeyUsagePurpose as Ku,
    };

    /// A CA (root or intermediate).
    pub struct Authority {
        pub pem: String,
        pub key_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
        params
    }

    impl Authority {
        pub fn root(name: &str) -> Authority {
            let key = KeyPair::generate().unwrap();
            let params = ca_params(name);
            let pem = params.self_signed(&key).unwrap().pem();
            Authority {
                pem,
                key_pem: key.serialize_pem(),
                issuer: Issuer::new(params, key),
            }
        }

        pub fn intermediate(&self, name: &str) -> Authority {
            let key = KeyPair::generate().unwrap();
            let params = ca_params(name);
            let pem = params.signed_by(&key, &self.issuer).unwrap().pem();
            Authority {
                pem,
                key_pem: key.serialize_pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A client leaf: EKU clientAuth and keyUsage digitalSignature unless `edit` says
        /// otherwise. (certificate PEM, key PEM)
        pub fn leaf(&self, edit: impl FnOnce(&mut CertificateParams)) -> (String, String) {
            let mut params = CertificateParams::new(vec!["controller".to_owned()]).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "controller");
            params.extended_key_usages = vec![Eku::ClientAuth];
            params.key_usages = vec![Ku::DigitalSignature];
            edit(&mut params);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }
}

/// Refusals of client certificates, as the agent counts them.
fn certificate_refusals(agent: &Agent) -> f64 {
    common::sample(
        &common::scrape(agent.metrics),
        r#"autofs_connections_refused_total{listener="grpc",reason="client_certificate"}"#,
    )
}

/// Waits until the agent has counted more than `before` certificate refusals (it counts
/// after the client saw the alert; a tonic channel may try more than one connection); the
/// new count.
async fn wait_refusals(agent: &Agent, before: f64, what: &str) -> f64 {
    common::eventually(
        &format!("{what}: a certificate refusal is counted"),
        || async {
            let got = certificate_refusals(agent);
            (got > before).then_some(got)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_every_client_leaf_unfit_for_client_authentication() {
    use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose as Eku, IsCa, KeyUsagePurpose as Ku};

    let pki = Pki::new();
    let root = matrix::Authority::root("client root CA");
    let intermediate = root.intermediate("client intermediate CA");
    let dir = tempfile::tempdir().unwrap();
    let client_ca = dir.path().join("client-ca.pem");
    std::fs::write(&client_ca, &root.pem).unwrap();
    let agent = Agent::from_builder(pki.server().tls_client_ca(&client_ca));
    let tls_with =
        |cert: &str, key: &str| client_tls(&pki.ca.pem, Some(&(cert.into(), key.into())));

    // What is fit is served: a leaf of the root, and a leaf of the intermediate presented
    // with its chain.
    let (cert, key) = root.leaf(|_| {});
    node_info(&agent, Some(tls_with(&cert, &key)))
        .await
        .expect("a fit leaf is served");
    let (cert, key) = intermediate.leaf(|_| {});
    let chain = format!("{cert}{}", intermediate.pem);
    node_info(&agent, Some(tls_with(&chain, &key)))
        .await
        .expect("a leaf of an intermediate, sent with its chain, is served");
    assert_eq!(certificate_refusals(&agent), 0.0);

    let other = matrix::Authority::root("someone else's CA");
    let past = (
        rcgen::date_time_ymd(2000, 1, 1),
        rcgen::date_time_ymd(2001, 1, 1),
    );
    let future = (
        rcgen::date_time_ymd(2100, 1, 1),
        rcgen::date_time_ymd(2101, 1, 1),
    );
    let unfit: Vec<(&str, (String, String))> = vec![
        ("a leaf of another CA", other.leaf(|_| {})),
        (
            "an expired leaf",
            root.leaf(|p| (p.not_before, p.not_after) = past),
        ),
        (
            "a leaf not yet valid",
            root.leaf(|p| (p.not_before, p.not_after) = future),
        ),
        (
            "a leaf for servers only (EKU serverAuth)",
            root.leaf(|p| p.extended_key_usages = vec![Eku::ServerAuth]),
        ),
        (
            "a leaf without extendedKeyUsage",
            root.leaf(|p| p.extended_key_usages = vec![]),
        ),
        (
            "a CA certificate as leaf (CA:TRUE)",
            root.leaf(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
        ),
        (
            "a leaf whose keyUsage lacks digitalSignature",
            root.leaf(|p| p.key_usages = vec![Ku::KeyEncipherment]),
        ),
        (
            "a leaf of an intermediate sent without it",
            intermediate.leaf(|_| {}),
        ),
    ];
    let mut refusals = 0.0;
    for (what, (cert, key)) in &unfit {
        let result = node_info(&agent, Some(tls_with(cert, key))).await;
        assert!(result.is_err(), "{what}: served {result:?}");
        refusals = wait_refusals(&agent, refusals, what).await;
    }

    // A 1024-bit RSA key: no rustls client signs with one, so OpenSSL presents it.
    let weak_cert = dir.path().join("weak.pem");
    let weak_key = dir.path().join("weak.key");
    let (root_pem, root_key) = (dir.path().join("root.pem"), dir.path().join("root.key"));
    std::fs::write(&root_pem, &root.pem).unwrap();
    std::fs::write(&root_key, &root.key_pem).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=controller"])
        .args(["-addext", "extendedKeyUsage=clientAuth"])
        .args(["-addext", "keyUsage=digitalSignature"])
        .args(["-addext", "basicConstraints=CA:FALSE"])
        .arg("-CA")
        .arg(&root_pem)
        .arg("-CAkey")
        .arg(&root_key)
        .arg("-keyout")
        .arg(&weak_key)
        .arg("-out")
        .arg(&weak_cert)
        .output()
        .expect("run openssl (scripts/install-test-deps)");
    assert!(made.status.success(), "{made:?}");
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, &pki.ca.pem).unwrap();
    let handshake = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &agent.grpc.to_string()])
        .args(["-servername", "localhost", "-alpn", "h2"])
        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
        .arg("-cert")
        .arg(&weak_cert)
        .arg("-key")
        .arg(&weak_key)
        .arg("-CAfile")
        .arg(&server_ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    wait_refusals(
        &agent,
        refusals,
        &format!(
            "a 1024-bit RSA leaf ({})",
            String::from_utf8_lossy(&handshake.stderr)
        ),
    )
    .await;

    // Still serving fit clients.
    let (cert, key) = root.leaf(|_| {});
    node_info(&agent, Some(tls_with(&cert, &key)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peers_that_never_finish_the_handshake_are_closed_at_the_deadline() {
    use std::io::{Read, Write};
    let pki = Pki::new();
    let agent = Agent::from_builder(
        pki.server()
            .tls_client_ca(&pki.client_ca)
            .args(["--handshake-timeout", "1s"]),
    );
    // A real ClientHello, then nothing: the peer never reads the answer nor goes on.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut peers = Vec::new();
    for _ in 0..20 {
        let mut hello = Vec::new();
        rustls::ClientConnection::new(
            std::sync::Arc::new(config.clone()),
            "localhost".try_into().unwrap(),
        )
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
        let mut peer = std::net::TcpStream::connect_timeout(&agent.grpc, HANG_GUARD).unwrap();
        peer.write_all(&hello).unwrap();
        peers.push(peer);
    }
    // Silent peers too (no ClientHello at all).
    for _ in 0..20 {
        peers.push(std::net::TcpStream::connect_timeout(&agent.grpc, HANG_GUARD).unwrap());
    }
    for (i, mut peer) in peers.into_iter().enumerate() {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        // Whatever the agent sent (its ServerHello), then the end of the connection.
        let mut sink = Vec::new();
        match peer.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("peer {i} was never closed: {e}"),
        }
    }
    // (Counted just after the socket is closed.)
    common::eventually("the 40 peers are counted as refused", || async {
        let text = common::scrape(agent.metrics);
        let series =
            r#"autofs_connections_refused_total{listener="grpc",reason="handshake_timeout"}"#;
        let n = common::sample(&text, series);
        assert!(n <= 40.0, "{text}");
        (n == 40.0).then_some(())
    })
    .await;
    // And a real client is served.
    let good = pki.ca.leaf(
        "controller",
        &["controller"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    node_info(&agent, Some(client_tls(&pki.ca.pem, Some(&good))))
        .await
        .unwrap();
}
