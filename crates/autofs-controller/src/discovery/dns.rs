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
    /// Any other failure (an error response code such as SERVFAIL or REFUSED, an invalid
    /// name, an I/O error).
    #[error("lookup failed")]
    Lookup(#[source] Box<NetError>),
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
    lookup(name, server)
        .await
        .map_err(|source| DiscoveryError::Dns {
            name: name.to_owned(),
            source,
        })
}

async fn lookup(name: &str, server: Option<SocketAddr>) -> Result<Vec<IpAddr>, DnsError> {
    let resolver = resolver(server)?;
    let asked = server.map_or_else(|| "the system resolver".to_owned(), |s| s.to_string());
    let found = resolver.lookup_ip(name).await.map_err(|e| match e {
        e if e.is_nx_domain() => DnsError::NoSuchName {
            server: asked.clone(),
        },
        e if e.is_no_records_found() => DnsError::NoRecords,
        e @ NetError::Timeout => DnsError::NoAnswer {
            server: asked.clone(),
            source: Box::new(e),
        },
        e => DnsError::Lookup(Box::new(e)),
    })?;
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in found.iter() {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err(DnsError::NoRecords);
    }
    Ok(out)
}

/// A resolver for one lookup: the system's, or one asking only `server`.
fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, DnsError> {
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
    // Both families, A first: a dual-stack DaemonSet lists every agent under both.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| DnsError::Lookup(Box::new(e)))
}
