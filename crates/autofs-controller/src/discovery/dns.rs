//! DNS discovery: every A and AAAA record of a name (a headless Service lists one per agent
//! pod).
//!
//! Without a server the system resolver answers (`getaddrinfo` through
//! [`tokio::net::lookup_host`]). With one, a minimal RFC 1035 stub asks it directly: one A and
//! one AAAA query over UDP (two tries each), repeated over TCP when the answer is truncated.
//! That makes the lookup testable against a resolver the test starts, and lets an operator
//! bypass a node-local cache.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::backoff::Rng;
use crate::error::DiscoveryError;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// Per-try wait for a UDP answer.
const UDP_WAIT: Duration = Duration::from_millis(1500);
const UDP_TRIES: usize = 2;
const TCP_WAIT: Duration = Duration::from_secs(3);

/// Every address of `name`, in answer order without duplicates.
pub async fn resolve(
    name: &str,
    server: Option<SocketAddr>,
) -> Result<Vec<IpAddr>, DiscoveryError> {
    let fail = |reason: String| DiscoveryError::Dns {
        name: name.to_owned(),
        reason,
    };
    let mut out: Vec<IpAddr> = Vec::new();
    match server {
        None => {
            let addrs = tokio::net::lookup_host((name, 0))
                .await
                .map_err(|e| fail(e.to_string()))?;
            for a in addrs {
                if !out.contains(&a.ip()) {
                    out.push(a.ip());
                }
            }
        }
        Some(server) => {
            let (v4, v6) =
                tokio::join!(query(server, name, TYPE_A), query(server, name, TYPE_AAAA));
            // One family failing (a forwarder without upstream REFUSES the AAAA query of an
            // IPv4-only name) does not hide the other family's records.
            let (v4, v6) = match (v4, v6) {
                (Err(e4), Err(e6)) if e4 == e6 => return Err(fail(e4)),
                (Err(e4), Err(e6)) => return Err(fail(format!("A: {e4}; AAAA: {e6}"))),
                (Ok(found), Err(e)) | (Err(e), Ok(found))
                    if found.as_ref().is_none_or(Vec::is_empty) =>
                {
                    return Err(fail(e));
                }
                (Ok(found), Err(e)) | (Err(e), Ok(found)) => {
                    tracing::debug!(name, error = %e, "one address family failed");
                    (found, None)
                }
                (Ok(v4), Ok(v6)) => (v4, v6),
            };
            if v4.is_none() && v6.is_none() {
                return Err(fail(format!("no such name (NXDOMAIN from {server})")));
            }
            for ip in v4.into_iter().chain(v6).flatten() {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(fail("no A or AAAA records".into()));
    }
    Ok(out)
}

/// The records of one type; `None` on NXDOMAIN.
async fn query(server: SocketAddr, name: &str, qtype: u16) -> Result<Option<Vec<IpAddr>>, String> {
    let id = Rng::seeded().next_u64() as u16;
    let packet = encode_query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..UDP_TRIES {
        sock.send(&packet)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let wait = tokio::time::sleep(UDP_WAIT);
        tokio::pin!(wait);
        loop {
            let n = tokio::select! {
                r = sock.recv(&mut buf) => r.map_err(|e| format!("{server}: {e}"))?,
                () = &mut wait => break,
            };
            match parse_response(&buf[..n], id, qtype) {
                Ok(Answer::Truncated) => return query_tcp(server, &packet, id, qtype).await,
                Ok(Answer::NxDomain) => return Ok(None),
                Ok(Answer::Records(r)) => return Ok(Some(r)),
                // A stray datagram (old id, garbage): keep waiting for ours.
                Err(ParseError::NotOurs) => continue,
                Err(ParseError::Bad(e)) => return Err(format!("{server}: {e}")),
            }
        }
    }
    Err(format!("no answer from {server} (UDP, {UDP_TRIES} tries)"))
}

async fn query_tcp(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    qtype: u16,
) -> Result<Option<Vec<IpAddr>>, String> {
    let exchange = async {
        let mut s = TcpStream::connect(server).await?;
        let len = u16::try_from(packet.len()).map_err(std::io::Error::other)?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(packet);
        s.write_all(&framed).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(TCP_WAIT, exchange)
        .await
        .map_err(|_| format!("{server}: no TCP answer within {TCP_WAIT:?}"))?
        .map_err(|e| format!("{server} (TCP): {e}"))?;
    match parse_response(&buf, id, qtype) {
        Ok(Answer::Records(r)) => Ok(Some(r)),
        Ok(Answer::NxDomain) => Ok(None),
        Ok(Answer::Truncated) => Err(format!("{server}: truncated answer over TCP")),
        Err(ParseError::NotOurs) => Err(format!("{server}: TCP answer to another query")),
        Err(ParseError::Bad(e)) => Err(format!("{server}: {e}")),
    }
}

/// A standard recursive query for `name`.
pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(18 + name.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    p.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    p.extend_from_slice(&[0; 6]); // AN, NS, AR
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("invalid DNS name `{name}`"));
    }
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("invalid DNS label `{label}`"))?;
        p.push(len);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(p)
}

#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    Records(Vec<IpAddr>),
    Truncated,
    NxDomain,
}

#[derive(Debug, PartialEq)]
pub(crate) enum ParseError {
    /// Not an answer to this query (other id, not a response).
    NotOurs,
    /// Malformed, or an error rcode.
    Bad(String),
}

fn be16(b: &[u8], at: usize) -> Result<u16, ParseError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| ParseError::Bad("answer cut short".into()))
}

/// Offset just past the (possibly compressed) name starting at `at`.
fn skip_name(b: &[u8], mut at: usize) -> Result<usize, ParseError> {
    loop {
        let len = *b
            .get(at)
            .ok_or_else(|| ParseError::Bad("name runs past the end".into()))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xC0 == 0xC0 => return Ok(at + 2),
            l if l & 0xC0 != 0 => return Err(ParseError::Bad("bad label type".into())),
            l => at += 1 + usize::from(l),
        }
    }
}

/// Parses an answer to query `id` of type `qtype`.
pub(crate) fn parse_response(b: &[u8], id: u16, qtype: u16) -> Result<Answer, ParseError> {
    if b.len() < 12 || be16(b, 0)? != id {
        return Err(ParseError::NotOurs);
    }
    let flags = be16(b, 2)?;
    if flags & 0x8000 == 0 {
        return Err(ParseError::NotOurs);
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match flags & 0x000F {
        0 => {}
        3 => return Ok(Answer::NxDomain),
        2 => return Err(ParseError::Bad("server failure (SERVFAIL)".into())),
        5 => return Err(ParseError::Bad("query refused (REFUSED)".into())),
        rcode => return Err(ParseError::Bad(format!("error rcode {rcode}"))),
    }
    let (qd, an) = (be16(b, 4)?, be16(b, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(b, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(b, at)?;
        let (rtype, class) = (be16(b, at)?, be16(b, at + 2)?);
        let rdlen = usize::from(be16(b, at + 8)?);
        let rdata = b
            .get(at + 10..at + 10 + rdlen)
            .ok_or_else(|| ParseError::Bad("record data runs past the end".into()))?;
        at += 10 + rdlen;
        if class != CLASS_IN || rtype != qtype {
            continue; // CNAMEs and other records on the way
        }
        match (rtype, rdata.len()) {
            (TYPE_A, 4) => out.push(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]])),
            (TYPE_AAAA, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                out.push(IpAddr::from(a));
            }
            _ => {
                return Err(ParseError::Bad(format!(
                    "bad length {} of a type {rtype} record",
                    rdata.len()
                )));
            }
        }
    }
    Ok(Answer::Records(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `query` with the given records (each with a compressed owner name).
    fn response(query: &[u8], flags: u16, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2..4].copy_from_slice(&flags.to_be_bytes());
        r[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (rtype, data) in records {
            r.extend_from_slice(&[0xC0, 12]);
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&60u32.to_be_bytes());
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(data);
        }
        r
    }

    #[test]
    fn query_encodes_labels_and_type() {
        let q = encode_query(0x1234, "agents.ns.svc.", TYPE_AAAA).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x06agents\x02ns\x03svc\x00\x00\x1c\x00\x01");
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
    }

    #[test]
    fn answers_keep_every_record_of_the_type_and_skip_cnames() {
        let q = encode_query(7, "agents", TYPE_A).unwrap();
        let r = response(
            &q,
            0x8180,
            &[
                (5, b"\x05other\x00"),
                (TYPE_A, &[10, 0, 0, 1]),
                (TYPE_A, &[10, 0, 0, 2]),
            ],
        );
        assert_eq!(
            parse_response(&r, 7, TYPE_A).unwrap(),
            Answer::Records(vec![
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            ])
        );
        assert_eq!(parse_response(&r, 8, TYPE_A), Err(ParseError::NotOurs));
        assert_eq!(
            parse_response(&response(&q, 0x8183, &[]), 7, TYPE_A),
            Ok(Answer::NxDomain)
        );
        assert_eq!(
            parse_response(&response(&q, 0x8380, &[]), 7, TYPE_A),
            Ok(Answer::Truncated)
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let q = encode_query(7, "agents", TYPE_A).unwrap();
        let good = response(&q, 0x8180, &[(TYPE_A, &[10, 0, 0, 1])]);
        for cut in 12..good.len() {
            let _ = parse_response(&good[..cut], 7, TYPE_A);
        }
        let bad_len = response(&q, 0x8180, &[(TYPE_A, &[10, 0, 0])]);
        assert!(matches!(
            parse_response(&bad_len, 7, TYPE_A),
            Err(ParseError::Bad(_))
        ));
        let servfail = response(&q, 0x8182, &[]);
        assert!(matches!(
            parse_response(&servfail, 7, TYPE_A),
            Err(ParseError::Bad(_))
        ));
    }
}
