//! Kubernetes API discovery (cargo feature `kube`): the pods of the agent DaemonSet, listed
//! with kube-rs by label selector, page by page. A running pod with an IP becomes an endpoint
//! expecting its node, so the handshake proves that the agent answering at a pod IP is the one
//! of that node. A pod that is scheduled but cannot be asked (Pending, crash-looping out of
//! Running, no IP yet, evicted) becomes a *not ready* endpoint: the collector reports its node
//! as failed with the pod's phase and reason, instead of leaving the node out.
//!
//! Credentials are kube-rs's: an embedder passes its own [`Client`]; the CLI builds one from a
//! kubeconfig (exec credential plugins such as `aws eks get-token`,
//! `gke-gcloud-auth-plugin` or `kubelogin`, client certificates, tokens, token files, OIDC)
//! or the pod's service account.

mod list;
mod nodes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
pub use kube::Client;
use kube::Resource as _;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
pub use nodes::NodePage;
use tokio::time::Instant;

use super::Discovered;
use crate::backoff::BackoffConfig;
use crate::endpoint::NodeEndpoint;

/// Page size of the pod list.
pub const PAGE: u32 = 500;
/// Read timeout of a client the CLI builds (kube-rs has none by default).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why Kubernetes discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    /// Neither `$KUBECONFIG`, `~/.kube/config` nor in-cluster credentials are usable.
    #[error(
        "no Kubernetes credentials: no usable kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a cluster"
    )]
    Infer(#[source] Box<kube::config::InferConfigError>),
    /// A client could not be built from the configuration (TLS material, credentials).
    #[error("cannot build a Kubernetes client")]
    Client(#[source] Box<kube::Error>),
    /// The credentials could not be obtained (an exec plugin failed, a token file is
    /// unreadable).
    #[error("getting credentials from {provider}")]
    Credentials {
        /// Where they come from (`exec plugin /usr/bin/aws`, …).
        provider: String,
        /// What failed.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused a list (RBAC, a missing namespace, …).
    #[error("{what}: HTTP {code} {reason}: {message}")]
    Api {
        /// Which list (`listing pods in namespace N`, `listing nodes`).
        what: String,
        /// HTTP status code.
        code: u16,
        /// The API's reason (`Forbidden`, `NotFound`, …).
        reason: String,
        /// The API's message.
        message: String,
    },
    /// The request failed: connection, TLS, or an answer that is not JSON.
    #[error("{what}")]
    Request {
        /// Which list (`listing pods in namespace N`, `listing nodes`).
        what: String,
        /// What failed.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server kept shedding load (429), failing (5xx) or dropping the connection
    /// until no retry fitted in the discovery deadline ([`KubeDiscovery::timeout`]).
    #[error("{what}: gave up after {attempts} attempts within {}: last {last}", crate::error::fmt_duration(*within))]
    Unavailable {
        /// Which list (`listing pods in namespace N`, `listing nodes`).
        what: String,
        /// Requests sent for the page that failed.
        attempts: u32,
        /// The discovery deadline.
        within: Duration,
        /// The last answer (`HTTP 503 Service Unavailable: …`) or connection failure.
        last: String,
    },
    /// The answer is not a usable `PodList`.
    #[error("malformed PodList: {0}")]
    Parse(String),
    /// No pod matched.
    #[error("no agent pod matches `{selector}` in namespace {namespace}{skipped}")]
    NoPods {
        /// The namespace.
        namespace: String,
        /// The label selector.
        selector: String,
        /// Pods that matched but were left out, and why.
        skipped: String,
    },
}

/// Which Kubernetes client lists the pods.
#[derive(Clone)]
pub enum Credentials {
    /// The embedder's client, with its own configuration, credentials and middleware.
    Client(Client),
    /// The current context of this kubeconfig file.
    Kubeconfig(PathBuf),
    /// `$KUBECONFIG`, else `~/.kube/config`, else the pod's service account (in-cluster).
    Infer,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Client(_) => f.write_str("Client(..)"),
            Credentials::Kubeconfig(p) => f.debug_tuple("Kubeconfig").field(p).finish(),
            Credentials::Infer => f.write_str("Infer"),
        }
    }
}

/// Where and how to look for agent pods.
///
/// A controller that already holds a client passes it in:
///
/// ```no_run
/// use std::time::Duration;
/// use autofs_controller::discovery::kube::{Client, Credentials, KubeDiscovery};
/// use autofs_controller::discovery::{self, Source};
/// # async fn run(client: Client) -> Result<(), Box<dyn std::error::Error>> {
/// let agents = KubeDiscovery {
///     namespace: "autofs-inspector".into(),
///     selector: "app.kubernetes.io/name=autofs-inspector".into(),
///     port: 50051,
///     credentials: Credentials::Client(client),
///     timeout: Duration::from_secs(10),
/// };
/// let found = discovery::discover(&[Source::Kube(agents)]).await?;
/// for gap in &found.coverage_unverified {
///     eprintln!("warning: {gap}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KubeDiscovery {
    /// Namespace of the DaemonSet.
    pub namespace: String,
    /// Label selector of its pods (e.g. `app.kubernetes.io/name=autofs-agent`).
    pub selector: String,
    /// The agents' gRPC port.
    pub port: u16,
    /// The client, or where to find credentials for one.
    pub credentials: Credentials,
    /// Deadline of the whole discovery, counted from its start: the API server's `429 Too
    /// Many Requests`, `5xx` and dropped connections are retried (after its `Retry-After`,
    /// else with exponential backoff) only while the wait ends before it. A request in
    /// flight is bounded by the client's read timeout (30 s for clients built from
    /// credentials), not by this.
    pub timeout: Duration,
}

impl KubeDiscovery {
    /// Lists the agent pods, then the Nodes: one endpoint per running pod, a not-ready
    /// endpoint per node whose agent pod cannot be asked (see [`NodeEndpoint::not_ready`]),
    /// and a not-ready endpoint (`node/NAME`) per node that has no agent pod at all. When
    /// the credentials may not list Nodes (HTTP 403), that is warned about once and said in
    /// [`Discovered::coverage_unverified`]: nodes without an agent pod cannot be seen then.
    ///
    /// # Errors
    ///
    /// [`KubeError`] when no client can be built, the API refuses or fails a list (a 403 on
    /// Nodes excepted), keeps shedding load past [`KubeDiscovery::timeout`]
    /// ([`KubeError::Unavailable`]), an answer is not the list asked for, or no pod matches
    /// at all.
    pub async fn discover(&self) -> Result<Discovered, KubeError> {
        let started = Instant::now();
        let (client, provider) = self.client().await?;
        let lister = |what: String, url_path: String, kind: &'static str| list::Lister {
            client: &client,
            what,
            url_path,
            kind,
            deadline: started + self.timeout,
            within: self.timeout,
            backoff: BackoffConfig::default(),
        };
        let pods_what = format!("listing pods in namespace {}", self.namespace);
        let mut pods = PodPage::default();
        lister(
            pods_what.clone(),
            Pod::url_path(&(), Some(&self.namespace)),
            "PodList",
        )
        .list(
            ListParams::default().labels(&self.selector),
            |e| list_error(e, &pods_what, provider.as_deref()),
            |items: Vec<Pod>| pods.add(items.iter(), self.port),
        )
        .await?;
        for s in &pods.skipped {
            tracing::info!(pod = %s, "agent pod left out");
        }
        let mut endpoints = pods.endpoints();
        if endpoints.is_empty() {
            return Err(KubeError::NoPods {
                namespace: self.namespace.clone(),
                selector: self.selector.clone(),
                skipped: if pods.skipped.is_empty() {
                    String::new()
                } else {
                    format!(" (left out: {})", pods.skipped.join("; "))
                },
            });
        }
        let nodes_what = "listing nodes".to_owned();
        let mut nodes = NodePage::default();
        let listed = lister(nodes_what.clone(), Node::url_path(&(), None), "NodeList")
            .list(
                ListParams::default(),
                |e| list_error(e, &nodes_what, provider.as_deref()),
                |items: Vec<Node>| nodes.add(items.iter()),
            )
            .await;
        let mut coverage_unverified = Vec::new();
        match listed {
            Ok(()) => {
                for ep in &mut endpoints {
                    let state = ep.expected_node.as_deref().and_then(|n| nodes.state(n));
                    if let (Some(why), Some(state)) = (&mut ep.not_ready, state) {
                        why.push_str("; node is ");
                        why.push_str(&state);
                    }
                }
                for s in &nodes.skipped {
                    tracing::info!(node = %s, "node left out");
                }
                let covered = pods.nodes();
                endpoints.extend(nodes.without_agent(&covered, &pods.terminating));
            }
            // Custom RBAC without `list` on nodes: the pods still say where agents are; only
            // nodes without one cannot be seen.
            Err(KubeError::Api {
                code: 403, message, ..
            }) => {
                let gap = format!(
                    "cannot list nodes: coverage of nodes without an agent pod is unknown (HTTP 403 Forbidden: {message})"
                );
                tracing::warn!("{gap}");
                coverage_unverified.push(gap);
            }
            Err(e) => return Err(e),
        }
        Ok(Discovered {
            endpoints,
            coverage_unverified,
        })
    }

    /// The client, and who provides its credentials (for error messages).
    async fn client(&self) -> Result<(Client, Option<String>), KubeError> {
        let mut config = match &self.credentials {
            Credentials::Client(c) => return Ok((c.clone(), None)),
            Credentials::Kubeconfig(path) => {
                let err = |source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source: Box::new(source),
                };
                let kc = Kubeconfig::read_from(path).map_err(err)?;
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(err)?
            }
            Credentials::Infer => kube::Config::infer()
                .await
                .map_err(|e| KubeError::Infer(Box::new(e)))?,
        };
        config.read_timeout = Some(READ_TIMEOUT);
        // Discovery retries load shedding itself, within its deadline and counting attempts;
        // kube-rs's own retry layer (up to 15 retries, waits of up to 1000 s, 500 not
        // retried) under it would multiply the attempts and outlast the deadline.
        config.default_retry = false;
        let auth = &config.auth_info;
        let provider = if let Some(exec) = &auth.exec {
            let mut command = exec
                .command
                .clone()
                .unwrap_or_else(|| "(no command)".into());
            for arg in exec.args.iter().flatten() {
                command.push(' ');
                command.push_str(arg);
            }
            Some(format!("exec plugin `{command}`"))
        } else if let Some(p) = &auth.auth_provider {
            Some(format!("auth provider `{}`", p.name))
        } else {
            auth.token_file.as_ref().map(|f| format!("token file {f}"))
        };
        let client = Client::try_from(config).map_err(|e| match e {
            e @ kube::Error::Auth(_) => KubeError::Credentials {
                provider: provider.clone().unwrap_or_else(|| "the kubeconfig".into()),
                source: Box::new(e),
            },
            e => KubeError::Client(Box::new(e)),
        })?;
        Ok((client, provider))
    }
}

/// A failed request as a [`KubeError`] of list `what`.
fn list_error(e: kube::Error, what: &str, provider: Option<&str>) -> KubeError {
    match e {
        kube::Error::Api(status) => KubeError::Api {
            what: what.to_owned(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        // Credentials are fetched (an exec plugin run, a token file read) in the client's
        // middleware, so their failure may come wrapped as a service error.
        e if matches!(e, kube::Error::Auth(_)) || is_auth_failure(&e) => KubeError::Credentials {
            provider: provider.unwrap_or("the client's configuration").to_owned(),
            source: Box::new(e),
        },
        source => KubeError::Request {
            what: what.to_owned(),
            source: Box::new(source),
        },
    }
}

/// Whether getting credentials failed somewhere down `e`'s chain.
fn is_auth_failure(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<kube::client::AuthError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The pods of every page, sorted out: [`PodPage::add`] each page, then take the
/// [`PodPage::endpoints`].
#[derive(Debug, Default)]
pub struct PodPage {
    /// One endpoint per running pod with an IP and a node.
    ready: Vec<NodeEndpoint>,
    /// One not-ready endpoint per pod that is on a node (or waiting for one) but cannot be
    /// asked, with whether its phase is terminal (`Failed`, `Succeeded`).
    not_ready: Vec<(NodeEndpoint, bool)>,
    /// `ns/name: why` of pods left out (terminating).
    pub skipped: Vec<String>,
    /// Node → `pod ns/name` of a terminating agent pod on it.
    pub terminating: BTreeMap<String, String>,
}

impl PodPage {
    /// Sorts `pods` into ready, not ready and left out; agents listen on `port`.
    ///
    /// # Errors
    ///
    /// [`KubeError::Parse`] when a pod has no name or an IP that is not one.
    pub fn add<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a Pod>,
        port: u16,
    ) -> Result<(), KubeError> {
        for pod in pods {
            let meta = &pod.metadata;
            let name = meta
                .name
                .as_deref()
                .ok_or_else(|| KubeError::Parse("a pod without a name".into()))?;
            let id = format!("{}/{name}", meta.namespace.as_deref().unwrap_or(""));
            if meta.deletion_timestamp.is_some() {
                // Its replacement (or the node's removal) follows; the old agent is going.
                self.skipped.push(format!("{id}: terminating"));
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    self.terminating.insert(node, format!("pod {id}"));
                }
                continue;
            }
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
            // `podIPs[0]` equals `podIP`, the primary family; some API servers send only
            // one of them.
            let ip = status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
                .or_else(|| {
                    status
                        .and_then(|s| s.pod_ips.as_ref())
                        .and_then(|ips| ips.first())
                        .map(|p| p.ip.clone())
                });
            let ip: Option<IpAddr> = ip
                .map(|ip| {
                    ip.parse().map_err(|_| {
                        KubeError::Parse(format!("pod {id}: podIP `{ip}` is not an IP"))
                    })
                })
                .transpose()?;
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty());
            let origin = format!("pod {id}");
            match (phase, ip, node) {
                ("Running", Some(ip), Some(node)) => self.ready.push(
                    NodeEndpoint::from_socket_addr((ip, port).into(), &origin).expecting(node),
                ),
                (_, ip, node) => {
                    let address = match ip {
                        Some(ip) => std::net::SocketAddr::from((ip, port)).to_string(),
                        None => format!("pod/{id}"),
                    };
                    let why = not_ready_reason(pod, phase, ip.is_some(), node.is_some());
                    let mut ep = NodeEndpoint {
                        address,
                        expected_node: None,
                        origin,
                        not_ready: Some(why),
                    };
                    if let Some(node) = node {
                        ep = ep.expecting(node);
                    }
                    self.not_ready
                        .push((ep, matches!(phase, "Failed" | "Succeeded")));
                }
            }
        }
        Ok(())
    }

    /// The nodes that have an agent pod that is not terminating, ready or not.
    pub fn nodes(&self) -> HashSet<&str> {
        self.ready
            .iter()
            .chain(self.not_ready.iter().map(|(ep, _)| ep))
            .filter_map(|ep| ep.expected_node.as_deref())
            .collect()
    }

    /// Every ready endpoint, then one not-ready endpoint per node that has no ready one
    /// (during a rolling update a node briefly has both; a non-terminal pod wins over an
    /// evicted one), then the not-ready pods that have no node yet.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        let mut out = self.ready.clone();
        let ready: HashSet<&str> = self
            .ready
            .iter()
            .filter_map(|e| e.expected_node.as_deref())
            .collect();
        let mut per_node: HashMap<&str, (usize, bool)> = HashMap::new();
        let mut unscheduled = Vec::new();
        for (i, (ep, terminal)) in self.not_ready.iter().enumerate() {
            let Some(node) = ep.expected_node.as_deref() else {
                unscheduled.push(ep.clone());
                continue;
            };
            if ready.contains(node) {
                continue;
            }
            match per_node.get(node) {
                Some((_, false)) => {}
                Some((_, true)) if *terminal => {}
                _ => {
                    per_node.insert(node, (i, *terminal));
                }
            }
        }
        let mut chosen: Vec<usize> = per_node.into_values().map(|(i, _)| i).collect();
        chosen.sort_unstable();
        out.extend(chosen.into_iter().map(|i| self.not_ready[i].0.clone()));
        out.extend(unscheduled);
        out
    }
}

/// `phase Pending: ContainerCreating`, `phase Running, no pod IP yet`, `not scheduled:
/// Unschedulable: 0/3 nodes are available…` — the phase and the most specific reason the pod
/// status gives.
fn not_ready_reason(pod: &Pod, phase: &str, has_ip: bool, has_node: bool) -> String {
    let status = pod.status.as_ref();
    let with_message = |reason: &str, message: Option<&str>| match message {
        Some(m) if !m.is_empty() => format!("{reason}: {m}"),
        _ => reason.to_owned(),
    };
    // The pod's own reason (Evicted, NodeLost…), else the first container that waits or
    // died (ContainerCreating, ImagePullBackOff, CrashLoopBackOff, Error…), else an
    // unsatisfied condition (Unschedulable…).
    let pod_reason = status
        .and_then(|s| s.reason.as_deref())
        .map(|r| with_message(r, status.and_then(|s| s.message.as_deref())));
    let container_reason = || {
        status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .find_map(|c| {
                let state = c.state.as_ref()?;
                if let Some(w) = &state.waiting {
                    return w
                        .reason
                        .as_deref()
                        .map(|r| with_message(r, w.message.as_deref()));
                }
                let t = state.terminated.as_ref()?;
                Some(with_message(
                    t.reason.as_deref().unwrap_or("Terminated"),
                    t.message.as_deref(),
                ))
            })
    };
    let condition_reason = || {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.status == "False" && c.reason.is_some())
            .and_then(|c| {
                c.reason
                    .as_deref()
                    .map(|r| with_message(r, c.message.as_deref()))
            })
    };
    let reason = pod_reason
        .or_else(container_reason)
        .or_else(condition_reason);
    let mut text = if has_node {
        format!("agent pod is {phase}")
    } else {
        format!("agent pod is {phase}, not scheduled on a node")
    };
    if phase == "Running" && !has_ip {
        text.push_str(", no pod IP yet");
    }
    if let Some(r) = reason {
        text.push_str(" (");
        text.push_str(&r);
        text.push(')');
    }
    text
}
