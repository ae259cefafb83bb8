//! Agent endpoints: `host:port` addresses, validated once, with where each came from.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::error::DiscoveryError;

/// One agent to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    /// `host:port` (`[v6]:port` for IPv6 literals).
    pub address: String,
    /// The node this agent must say it runs on (known from Kubernetes discovery); the
    /// handshake refuses an agent that names another node.
    pub expected_node: Option<String>,
    /// Where the endpoint came from (`--nodes`, `nodes.txt:3`, `dns agents.ns:50051`, …).
    pub origin: String,
    /// Discovery found this node's agent but it cannot be asked (its pod is Pending, has no
    /// IP yet, was evicted…): why. Such an endpoint is never connected to; every operation
    /// reports it as a failed node ([`crate::NodeErrorKind::NotReady`]). Its `address` is
    /// then the pod IP and port when the pod has an IP, else `pod/NAMESPACE/NAME`.
    pub not_ready: Option<String>,
}

impl NodeEndpoint {
    /// Parses `host:port` (host: IPv4, `[IPv6]` or a DNS name) from `origin`.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidAddress`] (naming `origin` and why) when `input` is empty,
    /// has a scheme, lacks a port, has port 0 or one above 65535, writes an IPv6 address
    /// without brackets, or its host is neither an IP address nor an RFC 1123 name.
    pub fn parse(input: &str, origin: &str) -> Result<NodeEndpoint, DiscoveryError> {
        let invalid = |reason: &str| DiscoveryError::InvalidAddress {
            origin: origin.to_owned(),
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.contains("://") {
            return Err(invalid("give host:port without a scheme"));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(invalid("port 0"));
            }
            return Ok(NodeEndpoint::from_socket_addr(sa, origin));
        }
        // `[fe80::1%eth0]:port`: a link-local address with its zone given as the interface's
        // name (the standard parser takes only its index).
        if let Some((zoned, zone)) = zoned_ipv6(s) {
            let index = interface_index(zone).ok_or_else(|| {
                invalid(&format!(
                    "the IPv6 zone `{zone}` is no network interface of this host (give its name or index, as `ip link` lists them)"
                ))
            })?;
            let numbered = zoned.replacen(&format!("%{zone}]"), &format!("%{index}]"), 1);
            if let Ok(sa) = numbered.parse::<SocketAddr>() {
                if sa.port() == 0 {
                    return Err(invalid("port 0"));
                }
                return Ok(NodeEndpoint::from_socket_addr(sa, origin));
            }
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| invalid("missing :port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(invalid("port 0"));
        }
        if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
            return Err(invalid("IPv6 addresses must be written [addr]:port"));
        }
        if !valid_hostname(host) {
            return Err(invalid("the host is neither an IP address nor a DNS name"));
        }
        Ok(NodeEndpoint {
            address: format!("{}:{port}", host.to_ascii_lowercase()),
            expected_node: None,
            origin: origin.to_owned(),
            not_ready: None,
        })
    }

    /// An endpoint for a resolved address.
    pub fn from_socket_addr(addr: SocketAddr, origin: &str) -> NodeEndpoint {
        NodeEndpoint {
            address: addr.to_string(),
            expected_node: None,
            origin: origin.to_owned(),
            not_ready: None,
        }
    }

    /// Sets the node the agent must report.
    pub fn expecting(mut self, node: impl Into<String>) -> NodeEndpoint {
        self.expected_node = Some(node.into());
        self
    }
}

/// `[addr%zone]:port` split as (the input, the zone), when the zone is not a number.
fn zoned_ipv6(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('[')?.split_once(']')?.0;
    let zone = inner.split_once('%')?.1;
    (!zone.is_empty() && zone.parse::<u32>().is_err()).then_some((s, zone))
}

/// The index of network interface `name` (`/sys/class/net/NAME/ifindex`).
fn interface_index(name: &str) -> Option<u32> {
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // An all-numeric dotted name is a mistyped IPv4 address, not a host name.
        && !host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a whole endpoint list before any node is asked.
///
/// # Errors
///
/// [`DiscoveryError::Empty`] for an empty list; [`DiscoveryError::Duplicate`] (naming both
/// origins) for an address listed twice.
pub fn validate(endpoints: &[NodeEndpoint]) -> Result<(), DiscoveryError> {
    if endpoints.is_empty() {
        let sources = if cfg!(feature = "kube") {
            "give --nodes, --nodes-file, --dns or --kube-selector"
        } else {
            "give --nodes, --nodes-file or --dns"
        };
        return Err(DiscoveryError::Empty(sources.into()));
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for ep in endpoints {
        if let Some(first) = seen.insert(&ep.address, &ep.origin) {
            return Err(DiscoveryError::Duplicate {
                address: ep.address.clone(),
                first: first.to_owned(),
                second: ep.origin.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_ipv6_and_names() {
        assert_eq!(
            NodeEndpoint::parse("10.0.0.1:50051", "t").unwrap().address,
            "10.0.0.1:50051"
        );
        assert_eq!(
            NodeEndpoint::parse(" [fd00::1]:7 ", "t").unwrap().address,
            "[fd00::1]:7"
        );
        assert_eq!(
            NodeEndpoint::parse("Agent-1.kube-system.svc:50051", "t")
                .unwrap()
                .address,
            "agent-1.kube-system.svc:50051"
        );
    }

    #[test]
    fn ipv6_zones_are_taken_by_index_and_by_interface_name() {
        assert_eq!(
            NodeEndpoint::parse("[fe80::1%1]:7", "t").unwrap().address,
            "[fe80::1%1]:7"
        );
        // `lo` is interface 1 in every network namespace.
        assert_eq!(
            NodeEndpoint::parse("[fe80::1%lo]:7", "t").unwrap().address,
            "[fe80::1%1]:7"
        );
        let e = NodeEndpoint::parse("[fe80::1%nosuchif0]:7", "nodes.txt:2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the IPv6 zone `nosuchif0` is no network interface")
                && e.contains("nodes.txt:2"),
            "{e}"
        );
    }

    #[test]
    fn unparseable_addresses_say_what_is_wrong_and_where() {
        for (input, why) in [
            ("", "empty"),
            ("10.0.0.1", "missing :port"),
            ("10.0.0.1:0", "port 0"),
            ("10.0.0.1:99999", "not a number"),
            ("10.0.0.1:http", "not a number"),
            ("fd00::1:50051", "[addr]:port"),
            ("http://node:50051", "scheme"),
            ("no space:1", "neither"),
            ("300.1.1.1:5", "neither"),
            ("-bad:5", "neither"),
        ] {
            let e = NodeEndpoint::parse(input, "nodes.txt:4")
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{input}: {e}");
            assert!(e.contains("nodes.txt:4"), "{input}: {e}");
        }
    }

    #[test]
    fn empty_and_duplicate_lists_are_refused() {
        assert!(matches!(validate(&[]), Err(DiscoveryError::Empty(_))));
        let a = NodeEndpoint::parse("10.0.0.1:1", "--nodes").unwrap();
        let b = NodeEndpoint::parse("10.0.0.1:1", "nodes.txt:2").unwrap();
        let e = validate(&[a, b]).unwrap_err().to_string();
        assert!(e.contains("10.0.0.1:1") && e.contains("nodes.txt:2"), "{e}");
    }
}
