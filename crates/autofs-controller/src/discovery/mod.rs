//! Node discovery: where the agents are. Every source yields [`NodeEndpoint`]s; the union of
//! all sources must be non-empty and free of duplicates.

pub mod dns;
#[cfg(feature = "kube")]
pub mod kube;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::endpoint::{self, NodeEndpoint};
use crate::error::DiscoveryError;

/// One way of finding agents.
#[derive(Debug, Clone)]
pub enum Source {
    /// A list of `host:port` (the CLI's `--nodes a:1,b:2`).
    Static(Vec<String>),
    /// A file with one `host:port` per line; `#` starts a comment; blank lines are skipped.
    File(PathBuf),
    /// Every A and AAAA record of `name` (a headless Service), each with `port`.
    Dns {
        /// The name to resolve.
        name: String,
        /// The agents' gRPC port.
        port: u16,
        /// Ask only this DNS server (UDP, TCP when the answer is truncated) instead of the
        /// system configuration.
        server: Option<SocketAddr>,
    },
    /// Pods of the agent DaemonSet, from the Kubernetes API (kube-rs).
    #[cfg(feature = "kube")]
    Kube(kube::KubeDiscovery),
}

impl Source {
    /// Whether the endpoints this source finds name every node it could serve: Kubernetes
    /// discovery gives every listed Linux Node an endpoint (a not-ready one when it has no
    /// agent pod), so a node it does not name is not a node of the cluster. Other sources
    /// list agents only.
    pub fn names_every_node(&self) -> bool {
        match self {
            #[cfg(feature = "kube")]
            Source::Kube(_) => true,
            _ => false,
        }
    }

    /// Parses the CLI's `--dns NAME:PORT`.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidAddress`] when `spec` is not `NAME:PORT`.
    pub fn dns(spec: &str, server: Option<SocketAddr>) -> Result<Source, DiscoveryError> {
        let ep = NodeEndpoint::parse(spec, "--dns")?;
        let (name, port) = ep
            .address
            .rsplit_once(':')
            .and_then(|(n, p)| Some((n.to_owned(), p.parse().ok()?)))
            .ok_or_else(|| DiscoveryError::InvalidAddress {
                origin: "--dns".into(),
                input: spec.into(),
                reason: "expected NAME:PORT".into(),
            })?;
        Ok(Source::Dns { name, port, server })
    }
}

/// What discovery found: the agents, and whether they are known to cover every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// The agents to ask, not-ready ones included (see [`NodeEndpoint::not_ready`]).
    pub endpoints: Vec<NodeEndpoint>,
    /// Why the endpoints may miss nodes, one sentence per gap ("cannot list nodes: coverage
    /// of nodes without an agent pod is unknown (…)", "dns NAME: AAAA lookup failed (…)").
    /// Empty when no source knows of a gap: Kubernetes discovery checks its pods against the
    /// Nodes; a static list, a nodes file or DNS whose lookups all answered are taken as the
    /// whole cluster. A non-empty list makes every cluster report
    /// incomplete ([`crate::ClusterReport::coverage_unverified`]).
    pub coverage_unverified: Vec<String>,
}

impl From<Vec<NodeEndpoint>> for Discovered {
    /// Endpoints taken as covering the whole cluster.
    fn from(endpoints: Vec<NodeEndpoint>) -> Discovered {
        Discovered {
            endpoints,
            coverage_unverified: Vec::new(),
        }
    }
}

/// Runs every source and returns the union, refusing an empty result and duplicates.
///
/// # Errors
///
/// The first source that fails ([`DiscoveryError::File`], [`DiscoveryError::Dns`], a
/// Kubernetes error, an invalid address), or [`DiscoveryError::Empty`] /
/// [`DiscoveryError::Duplicate`] for the union.
pub async fn discover(sources: &[Source]) -> Result<Discovered, DiscoveryError> {
    let mut all = Vec::new();
    let mut coverage_unverified = Vec::new();
    for source in sources {
        match source {
            Source::Static(list) => {
                for item in list {
                    all.push(NodeEndpoint::parse(item, "--nodes")?);
                }
            }
            Source::File(path) => all.extend(read_nodes_file(path)?),
            Source::Dns { name, port, server } => {
                let (addrs, gaps) = dns::resolve_with_gaps(name, *server).await?;
                coverage_unverified.extend(gaps);
                let origin = format!("dns {name}");
                all.extend(
                    addrs.into_iter().map(|ip| {
                        NodeEndpoint::from_socket_addr(SocketAddr::new(ip, *port), &origin)
                    }),
                );
            }
            #[cfg(feature = "kube")]
            Source::Kube(k) => {
                let found = k.discover().await?;
                all.extend(found.endpoints);
                coverage_unverified.extend(found.coverage_unverified);
            }
        }
    }
    endpoint::validate(&all)?;
    Ok(Discovered {
        endpoints: all,
        coverage_unverified,
    })
}

/// Reads a nodes file (see [`Source::File`]).
///
/// # Errors
///
/// [`DiscoveryError::File`] when it cannot be read, [`DiscoveryError::InvalidAddress`] naming
/// the line of a bad address.
pub fn read_nodes_file(path: &Path) -> Result<Vec<NodeEndpoint>, DiscoveryError> {
    let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::File {
        path: path.to_owned(),
        source,
    })?;
    parse_nodes_file(&text, &path.display().to_string())
}

/// Parses the text of a nodes file; `name` prefixes the origin of each endpoint (`name:LINE`).
///
/// # Errors
///
/// [`DiscoveryError::InvalidAddress`] naming the line of a bad address.
pub fn parse_nodes_file(text: &str, name: &str) -> Result<Vec<NodeEndpoint>, DiscoveryError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(NodeEndpoint::parse(line, &format!("{name}:{}", i + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_file_skips_comments_and_blank_lines_and_names_bad_lines() {
        let eps = parse_nodes_file(
            "# agents\n10.0.0.1:50051\n\n  10.0.0.2:50051   # rack 2\n[fd00::3]:50051\n",
            "nodes.txt",
        )
        .unwrap();
        let addrs: Vec<_> = eps.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(
            addrs,
            ["10.0.0.1:50051", "10.0.0.2:50051", "[fd00::3]:50051"]
        );
        assert_eq!(eps[1].origin, "nodes.txt:4");
        let e = parse_nodes_file("10.0.0.1:1\nbogus\n", "n").unwrap_err();
        assert!(e.to_string().contains("n:2"), "{e}");
    }

    #[tokio::test]
    async fn empty_and_duplicate_sources_fail_before_any_rpc() {
        let e = discover(&[Source::Static(vec![])]).await.unwrap_err();
        assert!(matches!(e, DiscoveryError::Empty(_)), "{e}");
        let e = discover(&[Source::Static(vec![
            "10.1.1.1:5".into(),
            "10.1.1.1:5".into(),
        ])])
        .await
        .unwrap_err();
        assert!(matches!(e, DiscoveryError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn dns_spec_needs_name_and_port() {
        assert!(matches!(
            Source::dns("agents.ns.svc:50051", None).unwrap(),
            Source::Dns { port: 50051, .. }
        ));
        assert!(Source::dns("agents.ns.svc", None).is_err());
    }
}
