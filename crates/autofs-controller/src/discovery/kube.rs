//! Kubernetes API discovery (cargo feature `kube`): the running pods of the agent DaemonSet,
//! selected by label, each with its node name and pod IP. The node name becomes the endpoint's
//! expected node, so the handshake proves that the agent answering at a pod IP is the one of
//! that node.
//!
//! Deliberately small: one `GET /api/v1/namespaces/{ns}/pods?labelSelector=…` (paged with
//! `limit`/`continue`) over HTTPS with hyper + rustls — crates tonic already brings in — and
//! the `PodList` parsed with serde into the few fields needed. The `kube` crate (with
//! `k8s-openapi`) would add minutes of build time on 2 cores for one list call.
//!
//! Credentials: in-cluster (service account token and CA) or a kubeconfig (current context;
//! `server`, `certificate-authority[-data]`, `token`/`tokenFile`,
//! `client-certificate[-data]`/`client-key[-data]`). Exec plugins and
//! `insecure-skip-tls-verify` are refused with a clear error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

use crate::endpoint::NodeEndpoint;

/// Page size of the pod list.
const PAGE: usize = 500;
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why Kubernetes discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable credentials or a malformed kubeconfig.
    #[error("configuration: {0}")]
    Config(String),
    /// The API server could not be reached or spoke no HTTP.
    #[error("request to {url}: {reason}")]
    Http {
        /// The URL asked.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The API server answered with an error status.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The API's message (from its `Status` object), or the body.
        message: String,
    },
    /// The answer is not a `PodList`.
    #[error("malformed PodList: {0}")]
    Parse(String),
    /// No running agent pod matched.
    #[error("no running pod with an IP matches `{selector}` in namespace {namespace}{skipped}")]
    NoPods {
        /// The namespace.
        namespace: String,
        /// The label selector.
        selector: String,
        /// Pods that matched but were skipped, and why.
        skipped: String,
    },
}

/// Where and how to look for agent pods.
#[derive(Debug, Clone)]
pub struct KubeDiscovery {
    /// Namespace of the DaemonSet.
    pub namespace: String,
    /// Label selector of its pods (e.g. `app.kubernetes.io/name=autofs-agent`).
    pub selector: String,
    /// The agents' gRPC port.
    pub port: u16,
    /// Kubeconfig; `None`: in-cluster config, then `$KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

impl KubeDiscovery {
    /// Lists the pods and returns one endpoint per running pod.
    pub async fn discover(&self) -> Result<Vec<NodeEndpoint>, KubeError> {
        let api = match &self.kubeconfig {
            Some(path) => ApiConfig::from_kubeconfig_file(path)?,
            None => match ApiConfig::in_cluster()? {
                Some(api) => api,
                None => ApiConfig::from_kubeconfig_file(&default_kubeconfig()?)?,
            },
        };
        let mut all = Vec::new();
        let mut skipped = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/namespaces/{}/pods?labelSelector={}&limit={PAGE}",
                encode(&self.namespace),
                encode(&self.selector)
            );
            if let Some(c) = &cont {
                path.push_str("&continue=");
                path.push_str(&encode(c));
            }
            let body = api.get(&path).await?;
            let page = parse_pod_list(&body, self.port)?;
            all.extend(page.endpoints);
            skipped.extend(page.skipped);
            match page.continue_token {
                Some(c) if !c.is_empty() => cont = Some(c),
                _ => break,
            }
        }
        if all.is_empty() {
            return Err(KubeError::NoPods {
                namespace: self.namespace.clone(),
                selector: self.selector.clone(),
                skipped: if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" (skipped: {})", skipped.join("; "))
                },
            });
        }
        for s in &skipped {
            tracing::warn!(pod = %s, "agent pod skipped");
        }
        Ok(all)
    }
}

/// One page of pods, turned into endpoints.
#[derive(Debug)]
pub struct PodPage {
    /// One endpoint per running pod with an IP and a node.
    pub endpoints: Vec<NodeEndpoint>,
    /// `ns/name: why` of pods left out (pending, terminating, no IP).
    pub skipped: Vec<String>,
    /// `metadata.continue`, when more pages follow.
    pub continue_token: Option<String>,
}

#[derive(Deserialize)]
struct PodList {
    kind: Option<String>,
    #[serde(default)]
    metadata: ListMeta,
    items: Option<Vec<Pod>>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: PodMeta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize)]
struct PodMeta {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(rename = "deletionTimestamp")]
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pod_ips: Vec<PodIp>,
}

#[derive(Deserialize)]
struct PodIp {
    ip: String,
}

/// Parses a `PodList` (JSON of `GET /api/v1/namespaces/{ns}/pods`) into endpoints on `port`.
/// Only running, not terminating pods with a node and an IP count; the first pod IP is used
/// (`podIPs[0]` equals `podIP`, the primary family).
pub fn parse_pod_list(json: &[u8], port: u16) -> Result<PodPage, KubeError> {
    let list: PodList =
        serde_json::from_slice(json).map_err(|e| KubeError::Parse(e.to_string()))?;
    if let Some(kind) = &list.kind
        && kind != "PodList"
    {
        return Err(KubeError::Parse(format!(
            "kind is {kind}, expected PodList"
        )));
    }
    let items = list
        .items
        .ok_or_else(|| KubeError::Parse("no `items`".into()))?;
    let mut page = PodPage {
        endpoints: Vec::new(),
        skipped: Vec::new(),
        continue_token: list.metadata.continue_token.filter(|c| !c.is_empty()),
    };
    for pod in items {
        let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
        let phase = pod.status.phase.as_deref().unwrap_or("Unknown");
        let ip = pod
            .status
            .pod_ip
            .clone()
            .filter(|ip| !ip.is_empty())
            .or_else(|| pod.status.pod_ips.first().map(|p| p.ip.clone()));
        let why = if pod.metadata.deletion_timestamp.is_some() {
            Some("terminating".to_owned())
        } else if phase != "Running" {
            Some(format!("phase {phase}"))
        } else if ip.is_none() {
            Some("no pod IP yet".to_owned())
        } else if pod.spec.node_name.as_deref().is_none_or(str::is_empty) {
            Some("not scheduled".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            page.skipped.push(format!("{id}: {why}"));
            continue;
        }
        let (Some(ip), Some(node)) = (ip, pod.spec.node_name) else {
            continue;
        };
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| KubeError::Parse(format!("pod {id}: podIP `{ip}` is not an IP")))?;
        page.endpoints.push(
            NodeEndpoint::from_socket_addr((ip, port).into(), &format!("pod {id}")).expecting(node),
        );
    }
    Ok(page)
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `https://host[:port]`.
    pub server: String,
    /// CA bundle (PEM) of the API server.
    pub ca_pem: Vec<u8>,
    /// Bearer token.
    pub token: Option<String>,
    /// Client certificate and key (PEM).
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextRef,
}

#[derive(Deserialize)]
struct ContextRef {
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority")]
    certificate_authority: Option<PathBuf>,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Deserialize, Default)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(rename = "client-certificate")]
    client_certificate: Option<PathBuf>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<PathBuf>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    exec: Option<serde_yaml::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_yaml::Value>,
}

fn config_err(msg: impl Into<String>) -> KubeError {
    KubeError::Config(msg.into())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, KubeError> {
    std::fs::read(path).map_err(|e| config_err(format!("{what} {}: {e}", path.display())))
}

fn b64(data: &str, what: &str) -> Result<Vec<u8>, KubeError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| config_err(format!("{what}: invalid base64: {e}")))
}

fn default_kubeconfig() -> Result<PathBuf, KubeError> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        // Only the first file of a list is read (no merging).
        let first = std::env::split_paths(&k).next().unwrap_or_default();
        return Ok(first);
    }
    std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".kube/config"))
        .ok_or_else(|| {
            config_err("not in a cluster, no $KUBECONFIG and no $HOME: give --kubeconfig")
        })
}

impl ApiConfig {
    /// The in-cluster config, when running in a pod (`KUBERNETES_SERVICE_HOST` set).
    pub fn in_cluster() -> Result<Option<ApiConfig>, KubeError> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = Path::new(SA_DIR);
        let token = String::from_utf8_lossy(&read(&dir.join("token"), "service account token")?)
            .trim()
            .to_owned();
        Ok(Some(ApiConfig {
            server: format!("https://{host}:{port}"),
            ca_pem: read(&dir.join("ca.crt"), "service account CA")?,
            token: Some(token),
            client_identity: None,
        }))
    }

    /// The current context of a kubeconfig file (relative paths are relative to its dir).
    pub fn from_kubeconfig_file(path: &Path) -> Result<ApiConfig, KubeError> {
        let text = read(path, "kubeconfig")?;
        ApiConfig::from_kubeconfig(
            &String::from_utf8_lossy(&text),
            path.parent().unwrap_or(Path::new(".")),
        )
    }

    /// The current context of a kubeconfig (YAML or JSON text).
    pub fn from_kubeconfig(text: &str, base: &Path) -> Result<ApiConfig, KubeError> {
        let kc: Kubeconfig =
            serde_yaml::from_str(text).map_err(|e| config_err(format!("kubeconfig: {e}")))?;
        let ctx_name = kc
            .current_context
            .ok_or_else(|| config_err("kubeconfig has no current-context"))?;
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| config_err(format!("kubeconfig: no context `{ctx_name}`")))?;
        let cluster = &kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| config_err(format!("kubeconfig: no cluster `{}`", ctx.context.cluster)))?
            .cluster;
        let default_user = User::default();
        let user = kc
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .map_or(&default_user, |u| &u.user);
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        if cluster.insecure_skip_tls_verify {
            return Err(config_err(
                "insecure-skip-tls-verify is not supported: give the cluster's CA",
            ));
        }
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(config_err(format!(
                "user `{}` authenticates through an exec/auth-provider plugin, which is not supported: use a token or client certificate",
                ctx.context.user
            )));
        }
        let ca_pem = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) => b64(data, "certificate-authority-data")?,
            (None, Some(p)) => read(&resolve(p), "certificate-authority")?,
            (None, None) => {
                return Err(config_err(format!(
                    "cluster `{}` has no certificate-authority: it is required",
                    ctx.context.cluster
                )));
            }
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Some(
                String::from_utf8_lossy(&read(&resolve(p), "tokenFile")?)
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let cert = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(d), _) => Some(b64(d, "client-certificate-data")?),
            (None, Some(p)) => Some(read(&resolve(p), "client-certificate")?),
            (None, None) => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(d), _) => Some(b64(d, "client-key-data")?),
            (None, Some(p)) => Some(read(&resolve(p), "client-key")?),
            (None, None) => None,
        };
        let client_identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(config_err("a client certificate needs its key, and back")),
        };
        if !cluster.server.starts_with("https://") {
            return Err(config_err(format!(
                "server `{}`: only https:// is supported",
                cluster.server
            )));
        }
        Ok(ApiConfig {
            server: cluster.server.trim_end_matches('/').to_owned(),
            ca_pem,
            token,
            client_identity,
        })
    }

    /// `host`, `port` and the name to verify, from `server`.
    fn authority(&self) -> Result<(String, u16, ServerName<'static>), KubeError> {
        let rest = self
            .server
            .strip_prefix("https://")
            .ok_or_else(|| config_err("server must be https://"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| config_err(format!("server `{}`", self.server)))?;
            (h.to_owned(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p),
                None => (authority.to_owned(), ""),
            }
        };
        let port = if port.is_empty() {
            443
        } else {
            port.parse()
                .map_err(|_| config_err(format!("server `{}`: bad port", self.server)))?
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| config_err(format!("server `{}`: {e}", self.server)))?;
        Ok((host, port, name))
    }

    fn tls(&self) -> Result<tokio_rustls::TlsConnector, KubeError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| config_err(format!("CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| config_err(format!("CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(config_err("CA: no PEM certificate"));
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(e.to_string()))?
        .with_root_certificates(roots);
        let config = match &self.client_identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| config_err(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| config_err(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| config_err(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// `GET path` (HTTP/1.1 over TLS), the body of a 200 answer.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, KubeError> {
        let url = format!("{}{path}", self.server);
        let http = |reason: String| KubeError::Http {
            url: url.clone(),
            reason,
        };
        let (host, port, name) = self.authority()?;
        let connector = self.tls()?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| http(format!("connect: {e}")))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| http(format!("TLS: {e}")))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| http(e.to_string()))?;
            tokio::spawn(conn);
            let mut req = hyper::Request::get(path)
                .header(hyper::header::HOST, format!("{host}:{port}"))
                .header(hyper::header::ACCEPT, "application/json");
            if let Some(token) = &self.token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| http(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http(e.to_string()))?
                .to_bytes();
            Ok::<_, KubeError>((status, body))
        };
        let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
            .await
            .map_err(|_| http("no answer within 30s".into()))??;
        if status != 200 {
            // The API explains itself in a `Status` object.
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(KubeError::Status {
                url,
                status,
                message,
            });
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_percent_encoded() {
        assert_eq!(
            encode("app.kubernetes.io/name=autofs-agent,tier in (a,b)"),
            "app.kubernetes.io%2Fname%3Dautofs-agent%2Ctier%20in%20%28a%2Cb%29"
        );
    }

    #[test]
    fn server_authority_with_and_without_port() {
        let api = |server: &str| ApiConfig {
            server: server.into(),
            ca_pem: Vec::new(),
            token: None,
            client_identity: None,
        };
        let (h, p, _) = api("https://10.0.0.1:6443").authority().unwrap();
        assert_eq!((h.as_str(), p), ("10.0.0.1", 6443));
        let (h, p, _) = api("https://kube.example").authority().unwrap();
        assert_eq!((h.as_str(), p), ("kube.example", 443));
        let (h, p, _) = api("https://[fd00::1]:6443").authority().unwrap();
        assert_eq!((h.as_str(), p), ("fd00::1", 6443));
    }
}
