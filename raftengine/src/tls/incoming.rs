//! [`PeerIncoming`]: the accepted connections a transport server serves,
//! TLS-terminated and tagged with the peer's certified node id.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tonic::transport::server::Connected;

use super::{PeerCredentials, node_id_of};

/// A TLS handshake must finish within this, so a peer that connects and
/// stays silent holds no slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the
/// kernel's accept queue.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Handshakes in progress at once from one IP address; a connection
/// beyond it is closed. Well under [`MAX_PENDING_HANDSHAKES`], so that
/// silent connections from one address cannot hold every handshake slot
/// and keep honest peers from connecting.
pub const MAX_PENDING_HANDSHAKES_PER_IP: usize = 16;

/// Bounds on what one listener holds open, so that a flood of
/// connections or calls from one place cannot exhaust a node.
///
/// # Contract
///
/// A connection beyond `max_connections` in all, or beyond
/// `max_connections_per_ip` from one IP address, is closed as soon as it
/// is accepted (before any TLS work) and the refusal is logged (at most
/// once every 10 s per listener, with a count). Each connection takes at
/// most `max_concurrent_streams` calls at once (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`); further streams are refused by
/// HTTP/2 itself. Every limit must be at least 1
/// ([`FactoryConfig::validate`](crate::FactoryConfig::validate)).
///
/// A peer message (one gRPC request or reply: a batch of Raft messages,
/// an append, a vote) larger than `max_message_bytes` is refused before it
/// is decoded, and a node sends none larger; the backend refuses a limit
/// too small for its largest proposal at start (`InvalidConfig`). A
/// snapshot upload announcing more than `max_snapshot_bytes` is refused
/// before a byte is written, and at most `max_snapshot_receives` uploads
/// are received at once (`ResourceExhausted` beyond), so the snapshot
/// bytes a node takes in at once are bounded by their product on disk and
/// by one chunk each in memory.
///
/// The defaults leave room for what honest peers open (each backend opens
/// a few lanes per peer, plus reconnects while old connections drain) in
/// clusters of tens of nodes, and for clients behind one address on an
/// API port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLimits {
    /// Connections open at once, in all (default 1024).
    pub max_connections: usize,
    /// Connections open at once from one IP address (default 64).
    pub max_connections_per_ip: usize,
    /// Calls open at once on one connection (default 128).
    pub max_concurrent_streams: u32,
    /// The largest peer message sent or accepted, in bytes (default
    /// 64 MiB).
    pub max_message_bytes: usize,
    /// The largest snapshot file accepted from a peer, in bytes (default
    /// 64 GiB).
    pub max_snapshot_bytes: u64,
    /// Snapshot uploads received at once (default 2: the leader's, and its
    /// retry while the first drains).
    pub max_snapshot_receives: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_concurrent_streams: 128,
            max_message_bytes: 64 * 1024 * 1024,
            max_snapshot_bytes: 64 * 1024 * 1024 * 1024,
            max_snapshot_receives: 2,
        }
    }
}

impl PeerLimits {
    /// Sets [`max_connections`](Self::max_connections).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`max_connections_per_ip`](Self::max_connections_per_ip).
    pub fn with_max_connections_per_ip(mut self, n: usize) -> Self {
        self.max_connections_per_ip = n;
        self
    }

    /// Sets [`max_concurrent_streams`](Self::max_concurrent_streams).
    pub fn with_max_concurrent_streams(mut self, n: u32) -> Self {
        self.max_concurrent_streams = n;
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    pub fn with_max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// Sets [`max_snapshot_bytes`](Self::max_snapshot_bytes).
    pub fn with_max_snapshot_bytes(mut self, n: u64) -> Self {
        self.max_snapshot_bytes = n;
        self
    }

    /// Sets [`max_snapshot_receives`](Self::max_snapshot_receives).
    pub fn with_max_snapshot_receives(mut self, n: usize) -> Self {
        self.max_snapshot_receives = n;
        self
    }

    /// Refuses a [`max_message_bytes`](Self::max_message_bytes) that
    /// cannot carry `needed` bytes (a backend's largest message: its
    /// largest proposal with the framing around it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming both.
    pub fn check_message_room(&self, needed: usize, what: &str) -> crate::Result<()> {
        if self.max_message_bytes < needed {
            return Err(crate::Error::InvalidConfig(format!(
                "peer_limits.max_message_bytes {} is below the {needed} bytes {what} needs",
                self.max_message_bytes
            )));
        }
        Ok(())
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_concurrent_streams == 0
            || self.max_message_bytes == 0
            || self.max_snapshot_bytes == 0
            || self.max_snapshot_receives == 0
        {
            return Err(format!("every peer limit must be at least 1: {self:?}"));
        }
        Ok(())
    }
}

/// The connections a listener holds open, in all and by IP address.
struct Slots {
    limits: PeerLimits,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    handshakes_by_ip: HashMap<IpAddr, usize>,
    refused_since_log: u64,
    last_log: Option<std::time::Instant>,
}

/// One open connection's place in [`Slots`], given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `ip`, or `None` (refusal logged).
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut s = self.lock();
        let from_ip = s.by_ip.get(&ip).copied().unwrap_or(0);
        if s.total < self.limits.max_connections && from_ip < self.limits.max_connections_per_ip {
            s.total += 1;
            s.by_ip.insert(ip, from_ip + 1);
            return Some(Slot {
                slots: self.clone(),
                ip,
            });
        }
        self.refused(&mut s, ip, "over the connection limit");
        None
    }

    /// A handshake slot for a connection from `ip`, or `None` (refusal
    /// logged) when `ip` has [`MAX_PENDING_HANDSHAKES_PER_IP`] under way.
    fn start_handshake(self: &Arc<Self>, ip: IpAddr) -> Option<Handshake> {
        let mut s = self.lock();
        let n = s.handshakes_by_ip.entry(ip).or_insert(0);
        if *n < MAX_PENDING_HANDSHAKES_PER_IP {
            *n += 1;
            return Some(Handshake {
                slots: self.clone(),
                ip,
            });
        }
        self.refused(
            &mut s,
            ip,
            "too many TLS handshakes under way from one address",
        );
        None
    }

    /// Counts a refusal; logs at most once every 10 s per listener.
    fn refused(&self, s: &mut SlotState, ip: IpAddr, why: &'static str) {
        s.refused_since_log += 1;
        let now = std::time::Instant::now();
        if s.last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                %ip,
                open = s.total,
                open_from_ip = s.by_ip.get(&ip).copied().unwrap_or(0),
                refused = s.refused_since_log,
                limits = ?self.limits,
                "peer connections refused: {why}"
            );
            s.refused_since_log = 0;
            s.last_log = Some(now);
        }
    }
}

/// One handshake under way from an address, given back on drop.
struct Handshake {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        if let Some(n) = s.handshakes_by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.handshakes_by_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Who is on the other end of a served connection. tonic puts it in every
/// request's extensions (`request.extensions().get::<PeerInfo>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's socket address.
    pub remote_addr: Option<SocketAddr>,
    /// The node id the peer's verified certificate names; `None` on a
    /// plaintext connection or a certificate that names none.
    pub node_id: Option<String>,
    /// The connection is TLS with a certificate verified against the CA.
    pub authenticated: bool,
}

impl PeerInfo {
    /// What [`PeerIncoming`] attaches to a connection; public so that a
    /// service's tests can attach it to a request they build.
    pub fn new(
        remote_addr: Option<SocketAddr>,
        node_id: Option<String>,
        authenticated: bool,
    ) -> Self {
        PeerInfo {
            remote_addr,
            node_id,
            authenticated,
        }
    }

    /// The [`PeerInfo`] of the connection `request` came on, if it was
    /// served through [`PeerIncoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection, plaintext or TLS.
pub struct PeerConn {
    io: Io,
    info: PeerInfo,
    _slot: Slot,
}

impl std::fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConn")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for PeerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections accepted on a listener, as a stream for tonic's
/// `serve_with_incoming`: with credentials, each one after a TLS handshake
/// that verified the peer's certificate (plaintext and unverifiable peers
/// are dropped and logged); without, as they come. Stops accepting when
/// dropped.
pub struct PeerIncoming {
    rx: mpsc::Receiver<io::Result<PeerConn>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PeerIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIncoming").finish_non_exhaustive()
    }
}

impl PeerIncoming {
    /// Accepts on `listener` within `limits`, terminating TLS with
    /// `credentials` (`None`: plaintext). Must be called inside a tokio
    /// runtime.
    pub fn new(
        listener: TcpListener,
        credentials: Option<PeerCredentials>,
        limits: PeerLimits,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let slots = Arc::new(Slots {
            limits,
            state: Mutex::new(SlotState::default()),
        });
        let task = tokio::spawn(accept_loop(listener, credentials, slots, tx));
        PeerIncoming { rx, task }
    }
}

impl Drop for PeerIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl tokio_stream::Stream for PeerIncoming {
    type Item = io::Result<PeerConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn accept_loop(
    listener: TcpListener,
    credentials: Option<PeerCredentials>,
    slots: Arc<Slots>,
    tx: mpsc::Sender<io::Result<PeerConn>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once, before any TLS work is spent.
        let Some(slot) = slots.take(remote.ip()) else {
            drop(tcp);
            continue;
        };
        // Raft traffic is many small frames; Nagle would add 40 ms stalls.
        let _ = tcp.set_nodelay(true);
        let Some(credentials) = credentials.clone() else {
            let conn = PeerConn {
                io: Io::Plain(tcp),
                info: PeerInfo {
                    remote_addr: Some(remote),
                    node_id: None,
                    authenticated: false,
                },
                _slot: slot,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
            continue;
        };
        let Some(handshake) = slots.start_handshake(remote.ip()) else {
            continue;
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = (permit, handshake);
            let acceptor = tokio_rustls::TlsAcceptor::from(credentials.server_config().await);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let node_id = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| node_id_of(c));
                    let conn = PeerConn {
                        io: Io::Tls(Box::new(tls)),
                        info: PeerInfo {
                            remote_addr: Some(remote),
                            node_id,
                            authenticated: true,
                        },
                        _slot: slot,
                    };
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "peer connection refused: TLS handshake failed");
                }
                Err(_) => {
                    tracing::warn!(%remote, "peer connection refused: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                }
            }
        });
    }
}
