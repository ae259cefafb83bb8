//! The controller with a client certificate against real agents (each in its own network
//! namespace) that require one; certificates made in the test with rcgen.

mod common;

use std::path::{Path, PathBuf};

use autofs_testkit::pki::Ca;
use common::*;
use rcgen::ExtendedKeyUsagePurpose;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn client_certificates_open_agents_that_require_them_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("autofs-inspector test CA");
    // Agents addressed by pod IP share one DNS name in their certificate (--tls-domain).
    let (scert, skey) = ca.leaf(
        "autofs-agent",
        &["agent.autofs.test"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (ccert, ckey) = ca.leaf(
        "autofs-controller",
        &["controller"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue = Ca::new("someone else");
    let (rcert, rkey) = rogue.leaf(
        "intruder",
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (ca_pem, scert, skey, ccert, ckey, rcert, rkey) = (
        write(d, "ca.pem", &ca.pem),
        write(d, "server.pem", &scert),
        write(d, "server.key", &skey),
        write(d, "client.pem", &ccert),
        write(d, "client.key", &ckey),
        write(d, "rogue.pem", &rcert),
        write(d, "rogue.key", &rkey),
    );
    let tls = [
        "--tls-cert",
        &scert,
        "--tls-key",
        &skey,
        "--tls-client-ca",
        &ca_pem,
    ];
    let a = Node::start("tls-a", &tls);
    let b = Node::start("tls-b", &tls);
    let nodes = format!("{},{}", a.endpoint(), b.endpoint());
    let base = [
        "nodes",
        "--nodes",
        &nodes,
        "--timeout",
        "3s",
        "--output",
        "json",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        controller(&args)
    };

    // The client's TLS flags; the certificate names the agents `agent.autofs.test`.
    let mtls = [
        "--tls-ca",
        &ca_pem,
        "--tls-cert",
        &ccert,
        "--tls-key",
        &ckey,
        "--tls-domain",
        "agent.autofs.test",
    ];
    let out = with(&mtls);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc[0]["node"], a.name());
    assert_eq!(doc[1]["node"], b.name());

    // collect over mTLS too.
    let out = controller(
        &[
            &["collect", "--nodes", &nodes][..],
            &mtls,
            &["--output", "json"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["complete"], true);

    // No client certificate, a certificate of another CA, plaintext, or a server name the
    // certificate does not carry: every node fails, each error naming its endpoint.
    for extra in [
        &["--tls-ca", &ca_pem, "--tls-domain", "agent.autofs.test"][..],
        &[
            "--tls-ca",
            &ca_pem,
            "--tls-cert",
            &rcert,
            "--tls-key",
            &rkey,
            "--tls-domain",
            "agent.autofs.test",
        ][..],
        &[][..],
        // The right certificate, but no --tls-domain: the name is the pod IP.
        &mtls[..6],
    ] {
        let out = with(extra);
        assert_eq!(out.status.code(), Some(3), "{extra:?}");
        let doc = json(&out);
        for n in doc.as_array().unwrap() {
            assert_eq!(n["reachable"], false, "{extra:?}: {n}");
            let e = n["error"].as_str().unwrap();
            assert!(e.contains(n["endpoint"].as_str().unwrap()), "{e}");
        }
    }

    // The agent's refusal of a session without a client certificate arrives under the first
    // call (TLS 1.3): a TLS failure, UNAVAILABLE (retried), whether the controller read the
    // agent's alert or only saw the connection close; the alert says what to give.
    let out = with(&["--tls-ca", &ca_pem, "--tls-domain", "agent.autofs.test"]);
    for n in json(&out).as_array().unwrap() {
        let e = n["error"].as_str().unwrap();
        assert!(e.contains(": unavailable: "), "{e}");
        assert!(
            !e.contains("CertificateRequired") || e.contains("--tls-cert and --tls-key"),
            "{e}"
        );
    }

    // Unreadable TLS files are one clear error before any node is asked.
    let out = with(&["--tls-ca", "/nonexistent/ca.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
    let out = with(&["--tls-ca", &ckey]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM certificate"));
}

#[test]
fn plaintext_against_a_tls_agent_and_tls_against_a_plaintext_one_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("autofs-inspector test CA");
    let (scert, skey) = ca.leaf(
        "autofs-agent",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (ca_pem, scert, skey) = (
        write(d, "ca.pem", &ca.pem),
        write(d, "server.pem", &scert),
        write(d, "server.key", &skey),
    );
    let tls_agent = start_agent(
        None,
        "speaks-tls",
        "127.0.0.1:0",
        &["--tls-cert", &scert, "--tls-key", &skey],
    );
    let plain_agent = start_agent(None, "speaks-plain", "127.0.0.1:0", &[]);

    // A plaintext controller reads the agent's TLS records as HTTP/2 frames: that is no
    // answer of the agent ("Internal"), it is a connection that cannot work without TLS.
    let out = controller(&["nodes", "--nodes", &tls_agent.grpc.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Internal") && text.contains("--tls-ca"),
        "{text}"
    );

    // A TLS controller whose handshake the plaintext agent drops.
    let out = controller(&[
        "nodes",
        "--nodes",
        &plain_agent.grpc.to_string(),
        "--tls-ca",
        &ca_pem,
        "--tls-domain",
        "localhost",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does the agent serve TLS?"), "{text}");
}
