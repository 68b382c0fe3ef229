//! What every backend's peer transport does the same way: the client
//! endpoint's defaults, dialling a peer (plaintext or TLS, the peer's
//! certificate checked against the node id being dialled), and the
//! removed-node notice's delivery.
//!
//! The wire messages stay each backend's own (their payload encodings
//! differ on purpose); these helpers take the call as a closure.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use raftengine::tls::PeerCredentials;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cluster_id::{self, CLUSTER_HEADER, ClusterId, TARGET_HEADER};

/// A channel to one peer whose every call is stamped with this node's
/// cluster id and the peer's numeric id ([`Stamp`]).
pub type PeerChannel = InterceptedService<Channel, Stamp>;

/// Puts [`CLUSTER_HEADER`] (once the cluster id is known) and
/// [`TARGET_HEADER`] on every call of a [`PeerChannel`].
#[derive(Debug, Clone)]
pub struct Stamp {
    cluster: ClusterId,
    to: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for Stamp {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let headers = request.metadata_mut();
        headers.insert(TARGET_HEADER, self.to.clone());
        if let Some(id) = self.cluster.get() {
            // 16 hex digits: always valid ASCII metadata.
            if let Ok(value) = cluster_id::format(id).parse() {
                headers.insert(CLUSTER_HEADER, value);
            }
        }
        Ok(request)
    }
}

/// HTTP/2 keepalive pings on a peer connection, so a half-open TCP
/// connection (a peer that lost power) is noticed without waiting for a
/// write to time out.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The client endpoint for the peer at `address` (`host:port`): connect
/// deadline `connect_timeout`, `TCP_NODELAY` (Raft messages are small and
/// latency-bound), keepalive pings every 5 s answered within
/// `connect_timeout`, also while idle. `local_ip` binds the connection's
/// source address (tests tell links apart by it); `None` lets the OS pick.
///
/// Returns `None` when `address` does not make a URI (addresses are
/// checked with [`raftengine::check_address`] before they get here).
///
/// ```
/// let e = raftengine_kit::peer::endpoint("127.0.0.1:7001", std::time::Duration::from_secs(1), None);
/// assert_eq!(e.map(|e| e.uri().to_string()), Some("http://127.0.0.1:7001/".to_owned()));
/// ```
pub fn endpoint(
    address: &str,
    connect_timeout: Duration,
    local_ip: Option<IpAddr>,
) -> Option<Endpoint> {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).ok()?;
    Some(
        endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .local_address(local_ip)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(connect_timeout)
            .keep_alive_while_idle(true),
    )
}

/// How a backend dials its peers: which source IP, within what deadline,
/// and with or without TLS.
#[derive(Debug, Clone)]
pub struct Dialer {
    credentials: Option<PeerCredentials>,
    local_ip: Option<IpAddr>,
    connect_timeout: Duration,
    cluster: ClusterId,
}

impl Dialer {
    /// `credentials` from `FactoryConfig::peer_credentials` (`None`:
    /// plaintext); `local_ip` from `FactoryConfig::outbound_source_ip`;
    /// `cluster` the id every call is stamped with.
    pub fn new(
        credentials: Option<PeerCredentials>,
        local_ip: Option<IpAddr>,
        connect_timeout: Duration,
        cluster: ClusterId,
    ) -> Self {
        Dialer {
            credentials,
            local_ip,
            connect_timeout,
            cluster,
        }
    }

    /// The [`endpoint`] for `address` with this dialer's settings.
    pub fn endpoint(&self, address: &str) -> Option<Endpoint> {
        endpoint(address, self.connect_timeout, self.local_ip)
    }

    /// A channel to the peer whose [`numeric_id`](raftengine::numeric_id)
    /// is `to`, reached at `endpoint`'s address; it connects on first use
    /// and again after a failure. With TLS, each connection reads the
    /// credentials again and is made only if the peer's certificate chains
    /// to the CA and names a node id whose numeric id is `to`: a wrong or
    /// stale address reaches nobody else.
    /// Every call on it carries this node's cluster id and `to`
    /// ([`Stamp`]).
    pub fn channel(&self, endpoint: Endpoint, to: u64) -> PeerChannel {
        let stamp = Stamp {
            cluster: self.cluster.clone(),
            // Decimal digits: always valid ASCII metadata.
            to: tonic::metadata::MetadataValue::from(to),
        };
        InterceptedService::new(self.connect(endpoint, to), stamp)
    }

    fn connect(&self, endpoint: Endpoint, to: u64) -> Channel {
        let Some(credentials) = self.credentials.clone() else {
            return endpoint.connect_lazy();
        };
        let (local_ip, deadline) = (self.local_ip, self.connect_timeout);
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            let credentials = credentials.clone();
            async move {
                let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
                let port = uri.port_u16().ok_or_else(|| format!("no port in {uri}"))?;
                let tls = raftengine::tls::dial(
                    &credentials,
                    host,
                    port,
                    local_ip,
                    deadline,
                    move |id| raftengine::numeric_id(id) == to,
                )
                .await?;
                Ok::<_, raftengine::BoxError>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
    }
}

/// The one check every inbound peer call passes first: who the caller is
/// ([`Caller`]), that the call is for this node ([`TARGET_HEADER`]) and
/// from this node's cluster ([`CLUSTER_HEADER`]).
#[derive(Debug, Clone)]
pub struct PeerGate {
    tls: bool,
    local_id: String,
    local: u64,
    cluster: ClusterId,
    departed: crate::departed::Departed,
}

impl PeerGate {
    /// The gate of node `local_id`; `tls` is whether it runs with TLS.
    pub fn new(local_id: &str, tls: bool, cluster: ClusterId) -> Self {
        PeerGate {
            tls,
            local_id: local_id.to_owned(),
            local: raftengine::numeric_id(local_id),
            cluster,
            departed: crate::departed::Departed::default(),
        }
    }

    /// The members this gate refuses because committed membership removed
    /// them; the backend records removals and re-additions in it as it
    /// applies them. Clones share it.
    pub fn departed(&self) -> &crate::departed::Departed {
        &self.departed
    }

    /// The node this gate admits calls for.
    pub fn local_id(&self) -> &str {
        &self.local_id
    }

    /// The cluster id this gate checks against.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    /// Admits `request`: its [`Caller`], once the call proved to be for
    /// this node and from this cluster. A node that does not know its
    /// cluster id yet (a joiner) adopts the caller's.
    ///
    /// # Errors
    ///
    /// [`Caller::of`]'s, then `FailedPrecondition` for a call addressed to
    /// another node or from another cluster (counted in
    /// [`ClusterId::refused`], logged once per peer and reason), or from a
    /// certified caller committed membership removed
    /// ([`Departed::check`](crate::departed::Departed::check)).
    pub async fn admit<T>(&self, request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        let caller = Caller::of(request, self.tls)?;
        let peer = caller
            .certified()
            .map(str::to_owned)
            .or_else(|| {
                raftengine::tls::PeerInfo::of(request)
                    .and_then(|i| i.remote_addr)
                    .map(|a| a.to_string())
            })
            .unwrap_or_else(|| "an unknown peer".to_owned());
        let headers = request.metadata();
        let to = headers
            .get(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if to != Some(self.local) {
            return Err(self.cluster.refuse(
                &peer,
                "target",
                format!(
                    "the call is for node {}, this is node {}",
                    to.map_or_else(|| "(none named)".to_owned(), |t| t.to_string()),
                    self.local
                ),
            ));
        }
        let theirs = match headers.get(CLUSTER_HEADER) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(cluster_id::parse) {
                Some(id) => Some(id),
                None => {
                    return Err(self.cluster.refuse(
                        &peer,
                        "cluster",
                        "the call's cluster id does not parse".to_owned(),
                    ));
                }
            },
        };
        self.cluster.admit(&peer, theirs).await?;
        if let Some(id) = caller.certified() {
            self.departed.check(raftengine::numeric_id(id))?;
        }
        Ok(caller)
    }
}

/// Who made an inbound call, as far as the connection proves it.
///
/// With TLS the verified certificate names one node id, and every id the
/// call claims to speak for (a batch's sender, a message's `from`, a
/// vote's candidate) must be that one; a call on a connection that was
/// not verified is refused outright. In plaintext mode nothing is proven
/// and every claim passes: that is what the opt-out means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    certified: Option<String>,
}

impl Caller {
    /// The caller of `request`; `tls` is whether this node runs with TLS.
    ///
    /// # Errors
    ///
    /// `Unauthenticated` when `tls` is on and the call did not come
    /// through a verified connection ([`raftengine::tls::PeerIncoming`])
    /// or its certificate names no node id.
    pub fn of<T>(request: &tonic::Request<T>, tls: bool) -> Result<Self, tonic::Status> {
        if !tls {
            return Ok(Caller { certified: None });
        }
        match raftengine::tls::PeerInfo::of(request) {
            Some(info) if info.authenticated => match &info.node_id {
                Some(id) => Ok(Caller {
                    certified: Some(id.clone()),
                }),
                None => Err(tonic::Status::unauthenticated(
                    "the peer's certificate names no node id",
                )),
            },
            _ => Err(tonic::Status::unauthenticated(
                "peer calls need mutual TLS; this connection is not authenticated",
            )),
        }
    }

    /// The node id the certificate names (`None` in plaintext mode).
    pub fn certified(&self) -> Option<&str> {
        self.certified.as_deref()
    }

    /// Checks a claimed sender id.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` when the certificate names another node.
    pub fn speaks_as(&self, claimed: &str) -> Result<(), tonic::Status> {
        match &self.certified {
            Some(id) if id != claimed => Err(tonic::Status::permission_denied(format!(
                "the certificate is for {id:?}, the call claims to come from {claimed:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks a claimed sender given as a [`numeric_id`](raftengine::numeric_id).
    ///
    /// # Errors
    ///
    /// `PermissionDenied` when the certificate names another node.
    pub fn speaks_as_numeric(&self, claimed: u64) -> Result<(), tonic::Status> {
        match &self.certified {
            Some(id) if raftengine::numeric_id(id) != claimed => {
                Err(tonic::Status::permission_denied(format!(
                    "the certificate is for {id:?}, the call claims to come from node {claimed}"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// A channel that speaks as the member whose credentials and data dir
/// (its cluster id) are given, to the node `to` at `address`: how a test
/// forges calls a real member could make.
///
/// # Errors
///
/// The cluster id cannot be read, or the address makes no endpoint.
#[cfg(feature = "dev")]
pub fn channel_as(
    credentials: &PeerCredentials,
    data_dir: &std::path::Path,
    address: &str,
    to: &str,
) -> Result<PeerChannel, String> {
    let cluster = ClusterId::open(data_dir, None).map_err(|e| e.to_string())?;
    let dialer = Dialer::new(
        Some(credentials.clone()),
        None,
        Duration::from_secs(5),
        cluster,
    );
    let endpoint = dialer
        .endpoint(address)
        .ok_or_else(|| format!("bad address {address}"))?;
    Ok(dialer.channel(endpoint, raftengine::numeric_id(to)))
}

/// Whether a removed notice naming a node that does not exist was refused
/// for that reason alone: the call got past the gate (certificate, cluster
/// id, target) and reached the engine's own checks.
///
/// # Errors
///
/// Any other answer, described.
#[cfg(feature = "dev")]
pub fn probe_reached<T: std::fmt::Debug>(answer: Result<T, tonic::Status>) -> Result<(), String> {
    match answer {
        Err(s)
            if s.code() == tonic::Code::InvalidArgument && s.message().contains("notice names") =>
        {
            Ok(())
        }
        other => Err(format!("the probe did not reach the engine: {other:?}")),
    }
}

/// How many times the removed-node notice is tried before the leader gives
/// up (the removed node then stays up until its operator stops it).
pub const REMOVED_NOTICE_ATTEMPTS: usize = 30;

/// Delivers the removed-node notice: `call` is tried up to
/// [`REMOVED_NOTICE_ATTEMPTS`] times, each within `deadline` and `deadline`
/// apart, until the peer accepts it or refuses it as not meant for it
/// (`InvalidArgument`: it is another node now, or the notice is stale).
/// Logs the outcome for `removed_id` and returns whether the peer accepted
/// it.
///
/// # Cancel safety
///
/// Dropping the future stops the retries; a call in flight may still land.
pub async fn deliver_removed_notice<F, Fut, T>(
    removed_id: &str,
    deadline: Duration,
    mut call: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..REMOVED_NOTICE_ATTEMPTS {
        match tokio::time::timeout(deadline, call()).await {
            Ok(Ok(_)) => {
                tracing::info!(node = %removed_id, "removed node notified");
                return true;
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => break,
            _ => tokio::time::sleep(deadline).await,
        }
    }
    tracing::info!(node = %removed_id, "removed node did not take the notice; it stays up until stopped");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(info: Option<raftengine::tls::PeerInfo>) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        if let Some(info) = info {
            r.extensions_mut().insert(info);
        }
        r
    }

    fn certified(id: Option<&str>) -> tonic::Request<()> {
        request(Some(raftengine::tls::PeerInfo::new(
            None,
            id.map(str::to_owned),
            true,
        )))
    }

    #[test]
    fn with_tls_a_call_speaks_only_as_its_certificate() {
        let n3 = Caller::of(&certified(Some("n3")), true).unwrap();
        assert_eq!(n3.certified(), Some("n3"));
        n3.speaks_as("n3").unwrap();
        n3.speaks_as_numeric(raftengine::numeric_id("n3")).unwrap();
        let denied = n3.speaks_as("n2").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
        let denied = n3
            .speaks_as_numeric(raftengine::numeric_id("n2"))
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    }

    #[test]
    fn with_tls_an_unproven_call_is_refused() {
        let unproven = [
            ("no connection info", request(None)),
            ("a certificate without a node id", certified(None)),
            (
                "a connection that was not verified",
                request(Some(raftengine::tls::PeerInfo::new(
                    None,
                    Some("n2".into()),
                    false,
                ))),
            ),
        ];
        for (what, r) in unproven {
            let refused = Caller::of(&r, true).unwrap_err();
            assert_eq!(
                refused.code(),
                tonic::Code::Unauthenticated,
                "{what}: {refused}"
            );
        }
    }

    #[tokio::test]
    async fn the_gate_admits_only_calls_for_this_node_from_this_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let founders = [raftengine::Server::voter("n1", "127.0.0.1:1")];
        let cluster = ClusterId::open(dir.path(), Some(&founders)).unwrap();
        let ours = cluster.get().unwrap();
        let gate = PeerGate::new("n1", false, cluster.clone());
        let call = |to: Option<&str>, from_cluster: Option<u64>| {
            let mut r = tonic::Request::new(());
            if let Some(to) = to {
                r.metadata_mut()
                    .insert(TARGET_HEADER, raftengine::numeric_id(to).into());
            }
            if let Some(c) = from_cluster {
                r.metadata_mut()
                    .insert(CLUSTER_HEADER, cluster_id::format(c).parse().unwrap());
            }
            r
        };
        gate.admit(&call(Some("n1"), Some(ours))).await.unwrap();
        let refused = [
            ("no target", call(None, Some(ours))),
            ("another target", call(Some("n2"), Some(ours))),
            ("another cluster", call(Some("n1"), Some(ours ^ 1))),
            ("no cluster", call(Some("n1"), None)),
        ];
        for (what, r) in refused {
            let e = gate.admit(&r).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{what}: {e}");
        }
        assert_eq!(cluster.refused(), 4);
    }

    #[test]
    fn in_plaintext_every_claim_passes() {
        let anyone = Caller::of(&request(None), false).unwrap();
        assert_eq!(anyone.certified(), None);
        anyone.speaks_as("n2").unwrap();
        anyone.speaks_as_numeric(7).unwrap();
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_notice_is_retried_until_accepted() {
        let tries = AtomicUsize::new(0);
        let accepted = deliver_removed_notice("n9", Duration::from_millis(2), || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(tonic::Status::unavailable("down"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(accepted);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_refused_notice_is_not_retried_and_retries_are_bounded() {
        let tries = AtomicUsize::new(0);
        let refused = deliver_removed_notice("n9", Duration::from_millis(2), || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(tonic::Status::invalid_argument("not me")) }
        })
        .await;
        assert!(!refused);
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        let tries = AtomicUsize::new(0);
        let silent = deliver_removed_notice("n9", Duration::from_millis(2), || {
            tries.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), tonic::Status>>()
        })
        .await;
        assert!(!silent);
        assert_eq!(tries.load(Ordering::SeqCst), REMOVED_NOTICE_ATTEMPTS);
    }

    #[test]
    fn a_bad_address_makes_no_endpoint() {
        assert!(endpoint("bad address with spaces", Duration::from_secs(1), None).is_none());
    }
}
