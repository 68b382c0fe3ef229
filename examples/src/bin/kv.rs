//! The replicated key-value service: `kv serve` runs one node; the other
//! subcommands are its client. See the README for a 3-node walkthrough.
//!
//! The node's Raft transport (`--listen`, peers only: mutual TLS unless
//! `--plaintext-peers`) and its client API (`--api`) listen apart. The
//! engine is chosen with `--engine` among the ones compiled in (cargo
//! features `etcd` and `openraft`); everything else codes against
//! `raftengine`'s traits only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use raftengine::tls::{PeerCredentials, PeerLimits, PeerSecurity, PeerTls};
use raftengine::{Factory, FactoryConfig, Server, StopReason, TransportServer};
use raftengine_examples::KvMachine;
use raftengine_examples::admin::AdminToken;
use raftengine_examples::api::kv_client::KvClient;
use raftengine_examples::api::{
    Empty, GetRequest, KeyRequest, MemberRequest, PutRequest, ReadMode,
};
use raftengine_examples::engines::{WithFactory, with_factory};
use raftengine_examples::service::{KvService, LEADER_ADDRESS, publish_api_address};
use tonic::transport::Channel;

/// A replicated key-value store on raftengine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Client commands: talk to an API port served with `--api-tls`, as
    /// this id (its certificate must name it; `kv gen-certs` issues one).
    #[arg(long, global = true, requires_all = ["client_ca", "client_cert", "client_key"])]
    client_id: Option<String>,
    /// The cluster CA (PEM) the node's certificate must chain to.
    #[arg(long, global = true, requires = "client_id")]
    client_ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(long, global = true, requires = "client_id")]
    client_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, requires = "client_id")]
    client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineKind {
    Etcd,
    Openraft,
}

impl EngineKind {
    /// The name `raftengine_examples::engines` knows it by.
    fn name(self) -> &'static str {
        match self {
            EngineKind::Etcd => "etcd",
            EngineKind::Openraft => "openraft",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Linearizable,
    Lease,
    Local,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        /// This node's id.
        #[arg(long)]
        id: String,
        /// Address the Raft transport listens on (peers only), e.g.
        /// 127.0.0.1:7001; the address other members know this node by.
        #[arg(long)]
        listen: String,
        /// Address the client API listens on, e.g. 127.0.0.1:8001.
        #[arg(long)]
        api: String,
        /// The CA peers' certificates must chain to (PEM).
        #[arg(long, requires_all = ["peer_cert", "peer_key"], conflicts_with = "plaintext_peers")]
        peer_ca: Option<PathBuf>,
        /// This node's certificate (PEM), naming its id
        /// (`urn:raftengine:node:<id>`); `kv gen-certs` makes one.
        #[arg(long, requires = "peer_ca")]
        peer_cert: Option<PathBuf>,
        /// This node's private key (PEM).
        #[arg(long, requires = "peer_ca")]
        peer_key: Option<PathBuf>,
        /// Run the Raft transport without TLS: anyone who reaches
        /// `--listen` can speak as any member. Closed networks only.
        #[arg(long)]
        plaintext_peers: bool,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The founding members, `id=address` comma separated (include this node).
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Form a new cluster from `--peers` if the data dir is empty.
        #[arg(long)]
        bootstrap: bool,
        /// Join an existing cluster as a learner (an admin adds it).
        #[arg(long)]
        join_as_learner: bool,
        /// Which Raft engine to run.
        #[arg(long, value_enum, default_value = "etcd")]
        engine: EngineKind,
        /// The file holding the token admin calls must carry (`kv
        /// gen-token` makes one). Without it every admin call is refused.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Serve the client API with mutual TLS, with this node's peer
        /// certificate: clients need one from the same CA.
        #[arg(long, requires = "peer_ca")]
        api_tls: bool,
    },
    /// Write a new admin token (128 random bits, hex) to `--out`, readable
    /// by its owner only.
    GenToken {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a value.
    Put {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        key: String,
        value: String,
    },
    /// Read a value.
    Get {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        key: String,
        #[arg(long, value_enum, default_value = "linearizable")]
        mode: Mode,
    },
    /// Delete a key.
    Delete {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        key: String,
    },
    /// Issue a trial cluster's certificates into `--out`: a CA (made on
    /// first use, kept in `ca.pem`/`ca.key`) and `<id>.pem`/`<id>.key` for
    /// each id. For trying TLS out; production certificates come from the
    /// operator's own CA.
    GenCerts {
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show a node's status.
    Status {
        #[arg(long, required = true)]
        addr: String,
    },
    /// Show the cluster configuration.
    Config {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
    },
    /// Add a learner.
    AddLearner {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        /// The file holding the cluster's admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        id: String,
        address: String,
    },
    /// Promote a learner to voter once it holds everything committed.
    Promote {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        /// The file holding the cluster's admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        id: String,
    },
    /// Remove a member.
    Remove {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        /// The file holding the cluster's admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        id: String,
    },
    /// Hand leadership to `id` (or to any voter).
    Transfer {
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        /// The file holding the cluster's admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        id: Option<String>,
    },
}

fn parse_peers(peers: &[String]) -> Result<Vec<Server>, String> {
    peers
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(id, addr)| Server::voter(id, addr))
                .ok_or_else(|| format!("peer {p:?} is not id=address"))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
/// `kv serve`'s node, run on whichever engine `--engine` names.
struct Serve {
    id: String,
    listen: String,
    api: String,
    security: PeerSecurity,
    data_dir: PathBuf,
    peers: Vec<Server>,
    bootstrap: bool,
    join_as_learner: bool,
    admin_token: Option<AdminToken>,
    /// Serve the API with mutual TLS (`--api-tls`).
    api_tls: bool,
}

impl WithFactory for Serve {
    type Output = Result<(), String>;

    async fn run<F: Factory + Clone>(self, _name: &'static str, factory: F) -> Self::Output {
        serve(factory, self).await
    }
}

async fn serve<F: Factory>(
    factory: F,
    Serve {
        id,
        listen,
        api,
        security,
        data_dir,
        peers,
        bootstrap,
        join_as_learner,
        admin_token,
        api_tls,
    }: Serve,
) -> Result<(), String> {
    let api_credentials = match (&security, api_tls) {
        (PeerSecurity::Tls(tls), true) => Some(
            PeerCredentials::load(tls, &id)
                .await
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let sm = KvMachine::default();
    let map = sm.map.clone();
    let data_dir_shown = data_dir.display().to_string();
    let config = FactoryConfig::new(id.clone(), listen.clone(), data_dir, sm)
        .with_peers(peers)
        .with_bootstrap(bootstrap)
        .with_join_as_learner(join_as_learner)
        .with_peer_security(security);
    let bind = |address: String| async move {
        tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| format!("listen on {address}: {e}"))
    };
    let (listener, api_listener) = (bind(listen.clone()).await?, bind(api.clone()).await?);
    let created = factory.create(config).await.map_err(|e| e.to_string())?;
    let server = created.serve(listener).map_err(|e| e.to_string())?;
    let engine = created.engine;
    let mut service = KvService::new(engine.clone(), map);
    match admin_token {
        Some(token) => service = service.with_admin_token(token),
        None => eprintln!("node {id}: no --admin-token-file; every admin call is refused"),
    }
    let api_routes = tonic::service::Routes::new(service.into_server());
    let api_server = TransportServer::spawn(
        api_routes,
        api_listener,
        api_credentials,
        PeerLimits::default(),
    )
    .map_err(|e| e.to_string())?;
    tokio::spawn(publish_api_address(engine.clone(), api.clone()));
    eprintln!(
        "node {id} ({}) serving peers on {listen}, clients on {api}",
        factory.engine_type()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    // A stop the operator did not ask for (removed, fatal) exits non-zero,
    // so a supervisor that restarts on failure sees it.
    let unasked = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        reason = engine.stopped() => Some(reason),
    };
    let _ = engine.shutdown().await;
    let _ = api_server.shutdown().await;
    let _ = server.shutdown().await;
    match unasked {
        None | Some(StopReason::Shutdown) => Ok(()),
        Some(StopReason::Removed) => Err(format!(
            "node {id} was removed from the cluster; wipe {} before reusing it",
            data_dir_shown
        )),
        Some(reason) => Err(format!("node {id} stopped: {reason:?}")),
    }
}

async fn connect(addr: &str, tls: Option<&PeerCredentials>) -> Result<KvClient<Channel>, String> {
    let channel = raftengine_examples::api_tls::connect(
        addr,
        tls,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await?;
    Ok(KvClient::new(channel))
}

/// How many times [`with_leader`] goes over the addresses while every node
/// answers "try again" (an election or a lease not yet held).
const ROUNDS: u32 = 4;

/// Runs `call` against the given addresses: follows not-leader hints, falls
/// back to the other addresses on any failure, and, while the answers say
/// the cluster is between leaders, tries them all again a few times.
async fn with_leader<T, F, Fut>(
    tls: Option<&PeerCredentials>,
    addrs: &[String],
    mut call: F,
) -> Result<T, String>
where
    F: FnMut(KvClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = String::from("no address given");
    for round in 0..ROUNDS {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(200 << round)).await;
        }
        let mut queue: Vec<String> = addrs.to_vec();
        let mut hops = 0;
        let mut retryable = false;
        while let Some(addr) = queue.first().cloned() {
            queue.remove(0);
            let client = match connect(&addr, tls).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match call(client).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    last = format!("{addr}: {}", s.message());
                    retryable |= s.code() == tonic::Code::Unavailable;
                    let hint = s
                        .metadata()
                        .get(LEADER_ADDRESS)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match hint {
                        Some(hint) if hops < 3 && hint != addr => {
                            hops += 1;
                            queue.retain(|a| *a != hint);
                            queue.insert(0, hint);
                        }
                        // No leader known yet: worth another round.
                        None if s.code() == tonic::Code::FailedPrecondition
                            && s.message().contains("no leader known") =>
                        {
                            retryable = true;
                        }
                        _ => {}
                    }
                }
            }
        }
        if !retryable {
            break;
        }
    }
    Err(last)
}

fn gen_certs(out: &std::path::Path, ids: &[String]) -> Result<(), String> {
    let pki = raftengine_conformance::TestPki::open_or_create(out, "kv trial CA")?;
    for id in ids {
        let tls = pki.node(id);
        println!(
            "{id}: --peer-ca {} --peer-cert {} --peer-key {}",
            tls.ca_file.display(),
            tls.cert_file.display(),
            tls.key_file.display()
        );
    }
    Ok(())
}

/// The client's TLS credentials, if `--client-id` is given (clap
/// requires the three files with it).
async fn client_tls(
    id: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<PeerCredentials>, String> {
    match (id, ca, cert, key) {
        (Some(id), Some(ca), Some(cert), Some(key)) => {
            PeerCredentials::load(&PeerTls::new(ca, cert, key), &id)
                .await
                .map(Some)
                .map_err(|e| e.to_string())
        }
        _ => Ok(None),
    }
}

/// The admin token in `file`, if one is given.
fn token_of(file: Option<PathBuf>) -> Result<Option<AdminToken>, String> {
    file.map(|f| AdminToken::from_file(&f)).transpose()
}

/// An admin request carrying `token` (none: the node refuses it).
fn admin<T>(token: &Option<AdminToken>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        token.attach(&mut request);
    }
    request
}

async fn client(command: Command, tls: Option<&PeerCredentials>) -> Result<(), String> {
    match command {
        Command::Serve { .. } | Command::GenCerts { .. } | Command::GenToken { .. } => {
            return Err("not a client command".into());
        }
        Command::Put { addr, key, value } => {
            let r = with_leader(tls, &addr, |mut c| {
                let req = PutRequest {
                    key: key.clone().into_bytes().into(),
                    value: value.clone().into_bytes().into(),
                };
                async move { c.put(req).await }
            })
            .await?;
            println!("ok, index {}", r.index);
        }
        Command::Delete { addr, key } => {
            let r = with_leader(tls, &addr, |mut c| {
                let req = KeyRequest {
                    key: key.clone().into_bytes().into(),
                };
                async move { c.delete(req).await }
            })
            .await?;
            println!("ok, index {}", r.index);
        }
        Command::Get { addr, key, mode } => {
            let mode = match mode {
                Mode::Linearizable => ReadMode::Linearizable,
                Mode::Lease => ReadMode::Lease,
                Mode::Local => ReadMode::Local,
            };
            let r = with_leader(tls, &addr, |mut c| {
                let req = GetRequest {
                    key: key.clone().into_bytes().into(),
                    mode: mode as i32,
                };
                async move { c.get(req).await }
            })
            .await?;
            if r.found {
                println!("{}", String::from_utf8_lossy(&r.value));
            } else {
                println!("(not found, read at index {})", r.index);
            }
        }
        Command::Status { addr } => {
            let s = with_leader(
                tls,
                &[addr],
                |mut c| async move { c.status(Empty {}).await },
            )
            .await?;
            println!(
                "{} [{}]: {} term {} commit {} applied {} leader {}",
                s.id,
                s.engine,
                s.state,
                s.term,
                s.commit_index,
                s.applied_index,
                if s.leader_id.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{}@{}", s.leader_id, s.leader_address)
                }
            );
        }
        Command::Config { addr } => {
            let c = with_leader(tls, &addr, |mut c| async move {
                c.configuration(Empty {}).await
            })
            .await?;
            println!("configuration at index {}", c.index);
            for m in c.members {
                let role = if m.voter { "voter" } else { "learner" };
                println!("  {} {} {role}", m.id, m.address);
            }
        }
        Command::AddLearner {
            addr,
            token_file,
            id,
            address,
        } => {
            let token = token_of(token_file)?;
            let r = with_leader(tls, &addr, |mut c| {
                let req = admin(
                    &token,
                    MemberRequest {
                        id: id.clone(),
                        address: address.clone(),
                    },
                );
                async move { c.add_learner(req).await }
            })
            .await?;
            println!("ok, configuration index {}", r.index);
        }
        Command::Promote {
            addr,
            token_file,
            id,
        } => {
            let token = token_of(token_file)?;
            let r = with_leader(tls, &addr, |mut c| {
                let req = admin(
                    &token,
                    MemberRequest {
                        id: id.clone(),
                        address: String::new(),
                    },
                );
                async move { c.promote(req).await }
            })
            .await?;
            println!("ok, configuration index {}", r.index);
        }
        Command::Remove {
            addr,
            token_file,
            id,
        } => {
            let token = token_of(token_file)?;
            let r = with_leader(tls, &addr, |mut c| {
                let req = admin(
                    &token,
                    MemberRequest {
                        id: id.clone(),
                        address: String::new(),
                    },
                );
                async move { c.remove(req).await }
            })
            .await?;
            println!("ok, configuration index {}", r.index);
        }
        Command::Transfer {
            addr,
            token_file,
            id,
        } => {
            let token = token_of(token_file)?;
            with_leader(tls, &addr, |mut c| {
                let req = admin(
                    &token,
                    MemberRequest {
                        id: id.clone().unwrap_or_default(),
                        address: String::new(),
                    },
                );
                async move { c.transfer(req).await }
            })
            .await?;
            println!("ok");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            id,
            listen,
            api,
            peer_ca,
            peer_cert,
            peer_key,
            plaintext_peers,
            data_dir,
            peers,
            bootstrap,
            join_as_learner,
            engine,
            admin_token_file,
            api_tls,
        } => {
            let security = match (peer_ca, peer_cert, peer_key, plaintext_peers) {
                (Some(ca), Some(cert), Some(key), false) => {
                    Ok(PeerSecurity::Tls(PeerTls::new(ca, cert, key)))
                }
                (None, None, None, true) => Ok(PeerSecurity::Plaintext),
                _ => Err(
                    "choose peer security: --peer-ca, --peer-cert and --peer-key, \
                          or --plaintext-peers"
                        .to_owned(),
                ),
            };
            match (parse_peers(&peers), security, token_of(admin_token_file)) {
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                (Ok(peers), Ok(security), Ok(admin_token)) => {
                    let job = Serve {
                        id,
                        listen,
                        api,
                        security,
                        data_dir,
                        peers,
                        bootstrap,
                        join_as_learner,
                        admin_token,
                        api_tls,
                    };
                    with_factory(engine.name(), job).await.and_then(|r| r)
                }
            }
        }
        Command::GenCerts { out, ids } => gen_certs(&out, &ids),
        Command::GenToken { out } => AdminToken::generate()
            .write_new(&out)
            .map_err(|e| format!("write {}: {e}", out.display())),
        command => match client_tls(
            cli.client_id,
            cli.client_ca,
            cli.client_cert,
            cli.client_key,
        )
        .await
        {
            Ok(tls) => client(command, tls.as_ref()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}
