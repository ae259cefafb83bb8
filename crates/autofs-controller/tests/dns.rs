//! DNS discovery (hickory-resolver) against a real resolver: `dnsmasq` (Debian package)
//! started by the test on loopback, serving a hosts file; agents in network namespaces behind
//! the names.

mod common;

use std::net::{IpAddr, SocketAddr};

use autofs_controller::discovery::{self, Source, dns};
use common::dnsmasq::Dnsmasq;
use common::*;

#[test]
fn dns_discovery_finds_every_agent_behind_a_name() {
    let a = Node::start("dns-a", &[]);
    let b = Node::start("dns-b", &[]);
    let many: String = (1..=60)
        .map(|i| format!("10.98.0.{i} many.autofs.test\n"))
        .collect();
    let dns = Dnsmasq::start(&format!(
        "{} agents.autofs.test\n{} agents.autofs.test\n\
         192.0.2.7 mixed.autofs.test\nfd00:99::7 mixed.autofs.test\n{many}",
        a.ns.ip(),
        b.ns.ip()
    ));
    let server = dns.addr.to_string();

    let out = controller(&[
        "nodes",
        "--dns",
        "agents.autofs.test:50051",
        "--dns-server",
        &server,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    let mut names: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    names.sort();
    let mut want = vec![a.name(), b.name()];
    want.sort();
    assert_eq!(names, want);

    let out = controller(&[
        "collect",
        "--dns",
        "agents.autofs.test:50051",
        "--dns-server",
        &server,
    ]);
    assert_eq!(out.status.code(), Some(0));

    let rt = tokio::runtime::Runtime::new().unwrap();
    // A and AAAA records both count.
    let mixed = rt
        .block_on(dns::resolve("mixed.autofs.test", Some(dns.addr)))
        .unwrap();
    assert_eq!(
        mixed,
        [
            "192.0.2.7".parse::<IpAddr>().unwrap(),
            "fd00:99::7".parse().unwrap()
        ]
    );
    let eps = rt
        .block_on(discovery::discover(&[Source::dns(
            "mixed.autofs.test:7",
            Some(dns.addr),
        )
        .unwrap()]))
        .unwrap();
    assert!(eps.coverage_unverified.is_empty());
    assert_eq!(eps.endpoints[1].address, "[fd00:99::7]:7");
    // 60 records do not fit a 512-byte UDP answer (it carries 29): the truncated answer is
    // asked again over TCP, which brings all of them.
    let all = rt
        .block_on(dns::resolve("many.autofs.test", Some(dns.addr)))
        .unwrap();
    assert_eq!(all.len(), 60);

    // A name that does not exist is a discovery error (exit 2) naming it.
    let out = controller(&[
        "collect",
        "--dns",
        "nobody.autofs.test:50051",
        "--dns-server",
        &server,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobody.autofs.test") && err.contains("NXDOMAIN"),
        "{err}"
    );
}

#[test]
fn dns_server_that_never_answers_is_a_clear_error() {
    // A UDP socket that receives and never replies.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = controller(&[
        "collect",
        "--dns",
        "agents.autofs.test:50051",
        "--dns-server",
        &silent.local_addr().unwrap().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no answer from {}", silent.local_addr().unwrap())),
        "{err}"
    );
}

#[test]
fn system_resolver_is_used_without_a_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ips = rt.block_on(dns::resolve("localhost", None)).unwrap();
    assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
}

/// A DNS server on 127.0.0.1 that answers every A question with no data (NOERROR, no
/// answer) and every AAAA question with SERVFAIL: a name that could not be resolved over IPv6
/// and has no IPv4 address, as an IPv6-only cluster's DNS answers while it cannot read its
/// Service records.
fn no_a_and_aaaa_servfail() -> SocketAddr {
    a_and_aaaa_servfail(None)
}

/// A DNS server on 127.0.0.1 that answers every A question with `a` (no data when `None`)
/// and every AAAA question with SERVFAIL. Messages are read and written with hickory's own
/// codec.
fn a_and_aaaa_servfail(a: Option<std::net::Ipv4Addr>) -> SocketAddr {
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::{RData, Record, RecordType, rdata};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = query.clone();
            answer.metadata.message_type = MessageType::Response;
            answer.metadata.recursion_available = true;
            answer.edns = None;
            answer.additionals.clear();
            answer.metadata.response_code = if query
                .queries
                .iter()
                .any(|q| q.query_type() == RecordType::AAAA)
            {
                ResponseCode::ServFail
            } else {
                if let (Some(ip), Some(q)) = (a, query.queries.first()) {
                    answer.answers.push(Record::from_rdata(
                        q.name().clone(),
                        5,
                        RData::A(rdata::A(ip)),
                    ));
                }
                ResponseCode::NoError
            };
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer);
        }
    });
    addr
}

#[test]
fn a_failed_aaaa_lookup_is_not_reported_as_no_records() {
    let server = no_a_and_aaaa_servfail();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(dns::resolve("agents.autofs.test", Some(server)))
        .unwrap_err();
    let text = error_chain(&e);
    // "No records" would read as "no agents behind the name": the name could not be resolved.
    assert!(!text.contains("no A or AAAA records"), "{text}");
    assert!(
        text.contains("AAAA lookup failed") && text.contains("Server Failure"),
        "{text}"
    );

    let out = controller(&[
        "collect",
        "--dns",
        "agents.autofs.test:50051",
        "--dns-server",
        &server.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agents.autofs.test: AAAA lookup failed") && !err.contains("no A or AAAA"),
        "{err}"
    );
}

#[test]
fn a_family_that_fails_while_the_other_answers_is_a_gap_in_the_coverage() {
    // The A records answer, the AAAA question fails: the agents found are asked, and the
    // answer says it may miss agents with only IPv6 addresses (it once only logged it).
    let agent = start_agent(None, "dns-half", "127.0.0.20:0", &[]);
    let server = a_and_aaaa_servfail(Some("127.0.0.20".parse().unwrap()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = "agents.half.autofs.test";
    let found = rt
        .block_on(discovery::discover(&[Source::Dns {
            name: name.into(),
            port: agent.grpc.port(),
            server: Some(server),
        }]))
        .unwrap();
    assert_eq!(found.endpoints.len(), 1, "{:?}", found.endpoints);
    assert_eq!(
        found.coverage_unverified.len(),
        1,
        "{:?}",
        found.coverage_unverified
    );
    let gap = &found.coverage_unverified[0];
    assert!(
        gap.starts_with(&format!("dns {name}: AAAA lookup failed ("))
            && gap.contains("Server Failure")
            && gap.ends_with("agents with only such addresses may be missing"),
        "{gap}"
    );

    let out = controller(&[
        "collect",
        "--dns",
        &format!("{name}:{}", agent.grpc.port()),
        "--dns-server",
        &server.to_string(),
    ]);
    // Every agent found answered, but the cluster may have more: partial.
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PARTIAL: coverage unverified, nodes may be missing: ")
            && text.contains("AAAA lookup failed"),
        "{text}"
    );
}
