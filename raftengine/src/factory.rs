//! [`Factory`]: creating an engine from engine-agnostic input.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::address::check_address;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::server::TransportServer;
use crate::state_machine::StateMachine;
use crate::tls::{PeerCredentials, PeerLimits, PeerSecurity};
use crate::types::{Server, Suffrage};

/// Engine-agnostic input to [`Factory::create`].
///
/// Engine-specific knobs (ticks, timeouts, message sizes) belong to the
/// concrete factory's own configuration, not here.
///
/// # Start-up modes
///
/// | data dir | `bootstrap` | `peers` | what the engine does |
/// |---|---|---|---|
/// | holds a node | any | any | restarts from it (flag and peers are ignored; membership comes from the log) |
/// | empty | `true` | voters incl. self, or empty | creates a new cluster with those voters (just self if empty) |
/// | empty | `false` | some members | starts empty and waits for a leader to add it ([`Admin::add_learner`](crate::Admin::add_learner) / [`Admin::add_voter`](crate::Admin::add_voter)) |
/// | empty | `false` | empty | refuses with [`Error::InvalidConfig`]: a wiped node must not start a second cluster by itself |
#[derive(Clone)]
#[non_exhaustive]
pub struct FactoryConfig<S> {
    /// The local node id (non-empty, unique in the cluster).
    pub local_id: String,
    /// The address peers reach this node's transport at, e.g. `"127.0.0.1:7001"`.
    pub local_address: String,
    /// Where the engine keeps its log, hard state and snapshots. The engine
    /// owns the directory; see each backend's docs for its layout.
    pub data_dir: PathBuf,
    /// The cluster members known at start-up (may include the local node).
    pub peers: Vec<Server>,
    /// Create a new cluster from `peers` if the data dir is empty.
    pub bootstrap: bool,
    /// The operator expects this node to join as a learner. If a membership
    /// change ever makes it a voter instead, the engine logs at ERROR (it
    /// keeps running: by then it already counts toward the quorum).
    pub join_as_learner: bool,
    /// Open peer connections from the IP of `local_address` instead of
    /// letting the OS choose: for a host with several addresses whose peers
    /// (or a proxy in between, as in the conformance suite's fault
    /// injection) must see which node a connection comes from. Needs an
    /// `ip:port` `local_address` ([`FactoryConfig::outbound_source_ip`]).
    pub bind_outbound_to_local_ip: bool,
    /// How peers authenticate ([`PeerSecurity`]). Required: `None` is
    /// refused by [`FactoryConfig::validate`], so plaintext is always an
    /// explicit choice.
    pub peer_security: Option<PeerSecurity>,
    /// What the peer port holds open at once ([`PeerLimits`]; defaults
    /// documented there). [`FactoryResult::serve`] applies them.
    pub peer_limits: PeerLimits,
    /// The application's state machine.
    pub state_machine: S,
}

impl<S> fmt::Debug for FactoryConfig<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactoryConfig")
            .field("local_id", &self.local_id)
            .field("local_address", &self.local_address)
            .field("data_dir", &self.data_dir)
            .field("peers", &self.peers)
            .field("bootstrap", &self.bootstrap)
            .field("join_as_learner", &self.join_as_learner)
            .field("bind_outbound_to_local_ip", &self.bind_outbound_to_local_ip)
            .field("peer_security", &self.peer_security)
            .field("peer_limits", &self.peer_limits)
            .finish_non_exhaustive()
    }
}

impl<S> FactoryConfig<S> {
    /// A node with no peers that does not bootstrap and no peer security
    /// chosen yet; set those with the `with_*` methods
    /// ([`with_peer_security`](Self::with_peer_security) is required).
    pub fn new(
        local_id: impl Into<String>,
        local_address: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        state_machine: S,
    ) -> Self {
        FactoryConfig {
            local_id: local_id.into(),
            local_address: local_address.into(),
            data_dir: data_dir.into(),
            peers: Vec::new(),
            bootstrap: false,
            join_as_learner: false,
            bind_outbound_to_local_ip: false,
            peer_security: None,
            peer_limits: PeerLimits::default(),
            state_machine,
        }
    }

    /// Sets [`FactoryConfig::peer_security`].
    pub fn with_peer_security(mut self, security: PeerSecurity) -> Self {
        self.peer_security = Some(security);
        self
    }

    /// Sets [`FactoryConfig::peer_limits`].
    pub fn with_peer_limits(mut self, limits: PeerLimits) -> Self {
        self.peer_limits = limits;
        self
    }

    /// Loads the peer TLS material ([`PeerCredentials::load`]); `None` for
    /// [`PeerSecurity::Plaintext`], which is logged as a warning. Backends
    /// call it in [`Factory::create`] and hand the result to their
    /// transport and to [`FactoryResult::peer_credentials`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when no security was chosen or the TLS
    /// files do not pass [`PeerCredentials::load`]'s checks.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    ///
    /// The future owns copies of what it needs, so it does not hold the
    /// config (whose state machine need not be `Sync`) across its awaits.
    pub fn peer_credentials(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<PeerCredentials>>> + Send + 'static {
        let security = self.peer_security.clone();
        let (local_id, local_address) = (self.local_id.clone(), self.local_address.clone());
        async move {
            match security {
                None => Err(no_security()),
                Some(PeerSecurity::Plaintext) => {
                    tracing::warn!(
                        node = %local_id,
                        "peer transport is PLAINTEXT: anyone who reaches {local_address} can speak as any member"
                    );
                    Ok(None)
                }
                Some(PeerSecurity::Tls(tls)) => {
                    PeerCredentials::load(&tls, &local_id).await.map(Some)
                }
            }
        }
    }

    /// Sets [`FactoryConfig::peers`].
    pub fn with_peers(mut self, peers: Vec<Server>) -> Self {
        self.peers = peers;
        self
    }

    /// Sets [`FactoryConfig::bootstrap`].
    pub fn with_bootstrap(mut self, bootstrap: bool) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// Sets [`FactoryConfig::join_as_learner`].
    pub fn with_join_as_learner(mut self, join_as_learner: bool) -> Self {
        self.join_as_learner = join_as_learner;
        self
    }

    /// Sets [`FactoryConfig::bind_outbound_to_local_ip`].
    pub fn with_bind_outbound_to_local_ip(mut self, bind: bool) -> Self {
        self.bind_outbound_to_local_ip = bind;
        self
    }

    /// The source IP peer connections must use: `None` (the OS picks)
    /// unless [`FactoryConfig::bind_outbound_to_local_ip`] is set, then
    /// the IP of `local_address`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the flag is set and `local_address` is
    /// not `ip:port` (a host name names no single source address).
    ///
    /// ```
    /// let c = raftengine::FactoryConfig::new("n1", "127.0.0.2:7001", "/tmp/n1", ())
    ///     .with_bind_outbound_to_local_ip(true);
    /// assert_eq!(c.outbound_source_ip()?, Some("127.0.0.2".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outbound_source_ip(&self) -> Result<Option<std::net::IpAddr>> {
        if !self.bind_outbound_to_local_ip {
            return Ok(None);
        }
        match self.local_address.parse::<std::net::SocketAddr>() {
            Ok(addr) => Ok(Some(addr.ip())),
            Err(_) => Err(Error::InvalidConfig(format!(
                "bind_outbound_to_local_ip needs an ip:port local_address, got {:?}",
                self.local_address
            ))),
        }
    }

    /// Checks what can be checked without the data dir.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty id, an address that is not
    /// `host:port` ([`check_address`]), duplicate peer ids, two ids with
    /// one [`numeric_id`](crate::numeric_id), a bootstrap peer list that
    /// lacks the local node or lists it as a learner, `bootstrap`
    /// together with `join_as_learner`, or no
    /// [`peer_security`](Self::peer_security). The TLS files themselves are
    /// checked by [`peer_credentials`](Self::peer_credentials).
    pub fn validate(&self) -> Result<()> {
        if self.local_id.is_empty() {
            return Err(Error::InvalidConfig("local_id is empty".into()));
        }
        if self.local_address.is_empty() {
            return Err(Error::InvalidConfig("local_address is empty".into()));
        }
        check_address(&self.local_address)
            .map_err(|e| Error::InvalidConfig(format!("local_address: {}", detail(e))))?;
        let mut seen = HashSet::new();
        for p in &self.peers {
            if p.id.is_empty() {
                return Err(Error::InvalidConfig("a peer has an empty id".into()));
            }
            check_address(&p.address)
                .map_err(|e| Error::InvalidConfig(format!("peer {:?}: {}", p.id, detail(e))))?;
            if !seen.insert(p.id.as_str()) {
                return Err(Error::InvalidConfig(format!(
                    "peer id {:?} is listed twice",
                    p.id
                )));
            }
            if p.id == self.local_id && p.address != self.local_address {
                return Err(Error::InvalidConfig(format!(
                    "peers list {:?} at {:?} but local_address is {:?}",
                    p.id, p.address, self.local_address
                )));
            }
        }
        self.outbound_source_ip()?;
        if self.peer_security.is_none() {
            return Err(no_security());
        }
        self.peer_limits.check().map_err(Error::InvalidConfig)?;
        crate::numeric_id::check_numeric_ids(
            std::iter::once(self.local_id.as_str()).chain(self.peers.iter().map(|p| p.id.as_str())),
        )?;
        if self.bootstrap {
            if self.join_as_learner {
                return Err(Error::InvalidConfig(
                    "bootstrap and join_as_learner exclude each other".into(),
                ));
            }
            if !self.peers.is_empty() {
                match self.peers.iter().find(|p| p.id == self.local_id) {
                    None => {
                        return Err(Error::InvalidConfig(format!(
                            "bootstrap peers do not include the local node {:?}",
                            self.local_id
                        )));
                    }
                    Some(p) if p.suffrage != Suffrage::Voter => {
                        return Err(Error::InvalidConfig(
                            "the bootstrapping node must be a voter".into(),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The voters a new cluster starts with: `peers`' voters, or just the
    /// local node when `peers` is empty.
    pub fn bootstrap_voters(&self) -> Vec<Server> {
        if self.peers.is_empty() {
            vec![Server::voter(&self.local_id, &self.local_address)]
        } else {
            self.peers
                .iter()
                .filter(|p| p.suffrage == Suffrage::Voter)
                .cloned()
                .collect()
        }
    }
}

fn no_security() -> Error {
    Error::InvalidConfig(
        "no peer security chosen: set FactoryConfig::with_peer_security(PeerSecurity::Tls(..)) \
         (or PeerSecurity::Plaintext, for tests and closed networks only)"
            .into(),
    )
}

/// What [`Factory::create`] returns: the engine and its transport.
pub struct FactoryResult<R: 'static> {
    /// The running engine.
    pub engine: Arc<dyn Engine<R>>,
    /// The engine's gRPC transport. Mount it on the application's own tonic
    /// server (`Server::builder().add_routes(transport)`, so application and
    /// Raft share one port), or serve it alone with
    /// [`FactoryResult::serve`]. With TLS, the server must accept through
    /// [`PeerIncoming`](crate::tls::PeerIncoming) (as `serve` does): the transport refuses calls
    /// that did not come through a verified connection.
    pub transport: tonic::service::Routes,
    /// The TLS material the transport was created with (`None`:
    /// plaintext), for serving it through [`PeerIncoming`](crate::tls::PeerIncoming).
    pub peer_credentials: Option<PeerCredentials>,
    /// The limits [`serve`](Self::serve) applies
    /// ([`FactoryConfig::peer_limits`]).
    pub peer_limits: PeerLimits,
}

impl<R: 'static> fmt::Debug for FactoryResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactoryResult")
            .field("engine", &self.engine.engine_type())
            .field("local_id", &self.engine.local_id())
            .finish_non_exhaustive()
    }
}

impl<R: 'static> FactoryResult<R> {
    /// Serves the transport alone on `listener` until the returned server is
    /// shut down or dropped.
    ///
    /// # Contract
    ///
    /// The server runs for as long as the returned [`TransportServer`]
    /// lives. Bind it to a name: `let _ = created.serve(l)?;` drops it, and
    /// stops the transport, at once. A bare `created.serve(l)?;` is a
    /// compile error under `#![deny(unused_must_use)]`:
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// async fn start(
    ///     created: raftengine::FactoryResult<()>,
    ///     listener: tokio::net::TcpListener,
    /// ) -> raftengine::Result<()> {
    ///     created.serve(listener)?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// ```
    /// # #![deny(unused_must_use)]
    /// async fn start(
    ///     created: raftengine::FactoryResult<()>,
    ///     listener: tokio::net::TcpListener,
    /// ) -> raftengine::Result<()> {
    ///     let server = created.serve(listener)?;
    ///     // ... run until told to stop ...
    ///     server.shutdown().await
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the listener's address cannot be read.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> Result<TransportServer> {
        TransportServer::spawn(
            self.transport.clone(),
            listener,
            self.peer_credentials.clone(),
            self.peer_limits,
        )
    }
}

/// Creates engines. Each backend crate provides one (`EtcdFactory`,
/// `OpenraftFactory`), constructed with the engine-specific settings.
///
/// # Contract
///
/// [`create`](Self::create) validates the whole configuration
/// ([`FactoryConfig::validate`]) before it touches the data dir, refuses a
/// dir of another node or one whose durable records were lost, restores the
/// newest snapshot into the state machine, and returns a started engine
/// with its transport to serve. A refused start leaves the data dir as it
/// found it.
///
/// # Errors
///
/// See [`create`](Self::create): `InvalidConfig`, `Storage`,
/// `StateMachine`.
///
/// # Cancel safety
///
/// Dropping `create`'s future before it returns may leave a half-started
/// node's files in the data dir (as a crash would); the next `create` on the
/// dir opens or refuses them like after a crash.
#[async_trait]
pub trait Factory: Send + Sync + 'static {
    /// The engine type this factory builds, e.g. `"etcd"`.
    fn engine_type(&self) -> &'static str;

    /// Opens (or creates) the node described by `config` and starts it.
    ///
    /// The engine starts sending to peers at once; they answer through the
    /// address each message carries, so the local transport must be served
    /// soon after (mount [`FactoryResult::transport`] or call
    /// [`FactoryResult::serve`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (see [`FactoryConfig::validate`] and the
    /// start-up table there), [`Error::Storage`] for a data dir that cannot
    /// be opened or holds corrupt data, [`Error::StateMachine`] if restoring
    /// the latest snapshot fails.
    async fn create<S: StateMachine>(
        &self,
        config: FactoryConfig<S>,
    ) -> Result<FactoryResult<S::Response>>;
}

/// A shared factory is a factory: one value can create many nodes, even
/// of several clusters, from several tasks.
#[async_trait]
impl<F: Factory> Factory for Arc<F> {
    fn engine_type(&self) -> &'static str {
        (**self).engine_type()
    }

    async fn create<S: StateMachine>(
        &self,
        config: FactoryConfig<S>,
    ) -> Result<FactoryResult<S::Response>> {
        (**self).create(config).await
    }
}

/// The message inside an [`Error::InvalidConfig`], to prefix it with where
/// the bad value came from.
fn detail(e: Error) -> String {
    match e {
        Error::InvalidConfig(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plaintext, so that each invalid config below fails for its own
    /// reason and not for the missing security choice.
    fn at(id: &str, address: &str) -> FactoryConfig<()> {
        FactoryConfig::new(id, address, "/tmp/x", ())
            .with_peer_security(crate::tls::PeerSecurity::Plaintext)
    }

    fn cfg() -> FactoryConfig<()> {
        at("n1", "127.0.0.1:1")
    }

    #[test]
    fn a_missing_security_choice_is_refused() {
        let unchosen = FactoryConfig::new("n1", "127.0.0.1:1", "/tmp/x", ());
        match unchosen.validate() {
            Err(Error::InvalidConfig(m)) => assert!(m.contains("no peer security"), "{m}"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn valid_configs_pass() {
        cfg().validate().unwrap();
        cfg().with_bootstrap(true).validate().unwrap();
        cfg()
            .with_bootstrap(true)
            .with_peers(vec![
                Server::voter("n1", "127.0.0.1:1"),
                Server::voter("n2", "127.0.0.1:2"),
            ])
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_configs_get_typed_errors() {
        let bad = [
            at("", "a:1"),
            at("n1", ""),
            cfg().with_peers(vec![Server::voter("n2", "a"), Server::voter("n2", "b")]),
            cfg().with_peers(vec![Server::voter("n1", "127.0.0.1:99")]),
            cfg()
                .with_bootstrap(true)
                .with_peers(vec![Server::voter("n2", "a")]),
            cfg()
                .with_bootstrap(true)
                .with_peers(vec![Server::learner("n1", "127.0.0.1:1")]),
            cfg().with_bootstrap(true).with_join_as_learner(true),
            // A host name names no single source address to bind.
            at("n1", "localhost:7001").with_bind_outbound_to_local_ip(true),
            cfg().with_peers(vec![
                Server::voter("n-e3aa66b1beb61d74", "127.0.0.1:2"),
                Server::voter("n-d6d8a48942f97c9d", "127.0.0.1:3"),
            ]),
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?} should be invalid"
            );
        }
    }

    #[test]
    fn bootstrap_voters_default_to_self() {
        assert_eq!(
            cfg().bootstrap_voters(),
            vec![Server::voter("n1", "127.0.0.1:1")]
        );
        let c = cfg().with_peers(vec![
            Server::voter("n1", "127.0.0.1:1"),
            Server::learner("n3", "c"),
        ]);
        assert_eq!(c.bootstrap_voters().len(), 1);
    }
}
