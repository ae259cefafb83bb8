//! DNS discovery: every A and AAAA record of a name (a headless Service lists one per agent
//! pod), looked up with [`hickory_resolver`].
//!
//! Without a server the system configuration applies (`/etc/resolv.conf`: name servers,
//! `search`, `ndots`; `/etc/hosts`), so a short Service name resolves inside a pod as it does
//! for any other program there. With one, only that server is asked (UDP, and TCP when the
//! answer is truncated — the resolver handles both), which lets an operator bypass a
//! node-local cache and lets tests use a resolver they start.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::error::DiscoveryError;

/// How long one try waits for an answer of a given `--dns-server`.
pub const SERVER_TIMEOUT: Duration = Duration::from_millis(1500);
/// Tries per query of a given `--dns-server`.
pub const SERVER_ATTEMPTS: usize = 2;

/// Why a DNS lookup found no agents.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("cannot read the system DNS configuration")]
    SystemConfig(#[source] Box<NetError>),
    /// The name does not exist.
    #[error("no such name (NXDOMAIN from {server})")]
    NoSuchName {
        /// Who said so (`127.0.0.1:53`, or "the system resolver").
        server: String,
    },
    /// The name exists but has neither A nor AAAA records.
    #[error("no A or AAAA records")]
    NoRecords,
    /// No server answered in time.
    #[error("no answer from {server} (every try timed out)")]
    NoAnswer {
        /// Who was asked.
        server: String,
        /// The resolver's last error.
        #[source]
        source: Box<NetError>,
    },
    /// Any other failure of the A or AAAA lookup (an error response code such as SERVFAIL or
    /// REFUSED, an invalid name, an I/O error), or a resolver that could not be built.
    #[error("{records} lookup failed")]
    Lookup {
        /// Which lookup: `A`, `AAAA`, or `A and AAAA` (building the resolver).
        records: &'static str,
        /// The resolver's error.
        #[source]
        source: Box<NetError>,
    },
}

/// Every address of `name`, A records first, without duplicates.
///
/// `server`: ask only this server; `None`: the system configuration.
///
/// # Errors
///
/// [`DiscoveryError::Dns`] when the name does not exist, has no address records, no server
/// answers, or the system configuration cannot be read.
pub async fn resolve(
    name: &str,
    server: Option<SocketAddr>,
) -> Result<Vec<IpAddr>, DiscoveryError> {
    resolve_with_gaps(name, server).await.map(|(ips, _)| ips)
}

/// [`resolve`], and what it could not see: one line per address family whose lookup failed
/// while the other's answered (`AAAA lookup failed: …`). Agents with addresses only of that
/// family may be missing from the answer.
///
/// # Errors
///
/// As [`resolve`].
pub async fn resolve_with_gaps(
    name: &str,
    server: Option<SocketAddr>,
) -> Result<(Vec<IpAddr>, Vec<String>), DiscoveryError> {
    lookup(name, server)
        .await
        .map_err(|source| DiscoveryError::Dns {
            name: name.to_owned(),
            source,
        })
}

/// A and AAAA are asked apart (in parallel) so that each family's failure is seen: one family
/// failing while the other has no records is a failure to resolve, never "no records" (an
/// IPv6-only cluster whose DNS SERVFAILs the AAAA question must not read as a Service without
/// agents). One family answering while the other fails gives the answer and the failure, as a
/// gap (a dual-stack agent is listed under both; an agent of only the failed family is not).
async fn lookup(
    name: &str,
    server: Option<SocketAddr>,
) -> Result<(Vec<IpAddr>, Vec<String>), DnsError> {
    let asked = server.map_or_else(|| "the system resolver".to_owned(), |s| s.to_string());
    let v4 = resolver(server, LookupIpStrategy::Ipv4Only)?;
    let v6 = resolver(server, LookupIpStrategy::Ipv6Only)?;
    let (a, aaaa) = tokio::join!(v4.lookup_ip(name), v6.lookup_ip(name));
    let family = |found: Result<hickory_resolver::lookup_ip::LookupIp, NetError>| match found {
        Ok(found) => Ok(found.iter().collect::<Vec<IpAddr>>()),
        // The name exists without records of this family: nothing, not a failure.
        Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(e),
    };
    let (a, aaaa) = (family(a), family(aaaa));
    let mut out: Vec<IpAddr> = Vec::new();
    let mut failed = Vec::new();
    for (kind, found) in [("A", a), ("AAAA", aaaa)] {
        match found {
            Ok(ips) => {
                for ip in ips {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
            Err(e) => failed.push((kind, e)),
        }
    }
    if !out.is_empty() {
        let mut gaps = Vec::new();
        for (kind, e) in &failed {
            if !e.is_nx_domain() {
                tracing::warn!(name, records = kind, error = %e, "DNS lookup of one address family failed; using the other's");
                gaps.push(format!(
                    "dns {name}: {kind} lookup failed ({e}): agents with only such addresses may be missing"
                ));
            }
        }
        return Ok((out, gaps));
    }
    // Nothing found: the first real failure says why; NXDOMAIN only when no lookup failed
    // otherwise; "no records" only when both families answered with none.
    let real = failed.iter().position(|(_, e)| !e.is_nx_domain());
    match (real, failed.first()) {
        (Some(i), _) => {
            let (kind, e) = failed.swap_remove(i);
            Err(match e {
                e @ NetError::Timeout => DnsError::NoAnswer {
                    server: asked,
                    source: Box::new(e),
                },
                e => DnsError::Lookup {
                    records: kind,
                    source: Box::new(e),
                },
            })
        }
        (None, Some(_)) => Err(DnsError::NoSuchName { server: asked }),
        (None, None) => Err(DnsError::NoRecords),
    }
}

/// A resolver for one lookup of the addresses `family` asks for: the system's, or one asking
/// only `server`.
fn resolver(
    server: Option<SocketAddr>,
    family: LookupIpStrategy,
) -> Result<TokioResolver, DnsError> {
    let mut builder = match server {
        None => TokioResolver::builder_tokio().map_err(|e| DnsError::SystemConfig(Box::new(e)))?,
        Some(server) => {
            let connection = |mut c: ConnectionConfig| {
                c.port = server.port();
                c
            };
            let ns = NameServerConfig::new(
                server.ip(),
                true,
                vec![
                    connection(ConnectionConfig::udp()),
                    connection(ConnectionConfig::tcp()),
                ],
            );
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            let opts = builder.options_mut();
            // The name is asked as given, of that server only.
            opts.use_hosts_file = ResolveHosts::Never;
            opts.timeout = SERVER_TIMEOUT;
            opts.attempts = SERVER_ATTEMPTS;
            builder
        }
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.ip_strategy = family;
    builder.build().map_err(|e| DnsError::Lookup {
        records: "A and AAAA",
        source: Box::new(e),
    })
}
