//! Fault injection on real sockets: a TCP proxy in front of every node.
//!
//! Node `i` runs on loopback IP `127.0.0.(i+1)`. Peers reach it through its
//! proxy (that proxy address is the node's advertised `local_address`), and
//! the node opens its own peer connections from its IP, so the proxy of the
//! receiving node knows which directed link a connection belongs to.
//! Cutting `a → b` resets every connection `a` opened to `b` and refuses new
//! ones; blackholing accepts them and never forwards a byte (the sender's
//! deadlines fire). Responses travel on the connection of their request, so a
//! cut `a → b` stops both `a`'s requests and `b`'s answers to them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// The state of one directed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    /// Bytes flow.
    #[default]
    Up,
    /// Connections are reset and refused.
    Cut,
    /// Connections are accepted but nothing is forwarded.
    Blackhole,
    /// Bytes flow, each read chunk held back this long in either direction:
    /// a slow, congested link rather than a dead one.
    Slow(std::time::Duration),
}

/// The loopback IP of node `i`.
pub fn node_ip(i: usize) -> IpAddr {
    // 127.0.0.0/8 is loopback everywhere on Linux; .1 is node 0.
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, (i + 1) as u8))
}

fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 127 && o[1] == 0 && o[2] == 0 && o[3] >= 1).then(|| o[3] as usize - 1)
        }
        IpAddr::V6(_) => None,
    }
}

#[derive(Debug, Default)]
struct Inner {
    links: HashMap<(usize, usize), Link>,
    conns: HashMap<(usize, usize), Vec<AbortHandle>>,
    /// Where node i really listens.
    backends: HashMap<usize, SocketAddr>,
}

/// The link table shared by every proxy.
#[derive(Debug, Clone, Default)]
pub struct Network {
    inner: Arc<Mutex<Inner>>,
}

impl Network {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the state of the directed link `from → to`.
    pub fn set(&self, from: usize, to: usize, link: Link) {
        let mut inner = self.lock();
        inner.links.insert((from, to), link);
        // Existing connections keep the behaviour they were opened with:
        // drop them so the new one applies to every byte from now on.
        if link != Link::Up {
            for h in inner.conns.remove(&(from, to)).unwrap_or_default() {
                h.abort();
            }
        }
    }

    /// Cuts both directions between `node` and every node in `others`.
    pub fn isolate(&self, node: usize, others: impl IntoIterator<Item = usize>) {
        for o in others {
            if o != node {
                self.set(node, o, Link::Cut);
                self.set(o, node, Link::Cut);
            }
        }
    }

    /// Slows both directions between `node` and every node in `others`.
    pub fn slow(
        &self,
        node: usize,
        others: impl IntoIterator<Item = usize>,
        delay: std::time::Duration,
    ) {
        for o in others {
            if o != node {
                self.set(node, o, Link::Slow(delay));
                self.set(o, node, Link::Slow(delay));
            }
        }
    }

    /// Restores every link. Slowed connections are dropped so that their
    /// replacements run at full speed.
    pub fn heal_all(&self) {
        let mut inner = self.lock();
        let slowed: Vec<(usize, usize)> = inner
            .links
            .iter()
            .filter(|(_, l)| matches!(l, Link::Slow(_)))
            .map(|(k, _)| *k)
            .collect();
        for k in slowed {
            for h in inner.conns.remove(&k).unwrap_or_default() {
                h.abort();
            }
        }
        inner.links.clear();
    }

    fn link(&self, from: usize, to: usize) -> Link {
        self.lock()
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// Tells the proxy of `node` where that node really listens. The
    /// harness does this for every node it starts; a backend author testing
    /// a transport alone uses it to put a proxy in front of one server.
    pub fn set_backend(&self, node: usize, addr: SocketAddr) {
        self.lock().backends.insert(node, addr);
    }

    fn track(&self, from: usize, to: usize, handle: AbortHandle) {
        let mut inner = self.lock();
        let list = inner.conns.entry((from, to)).or_default();
        list.retain(|h| !h.is_finished());
        list.push(handle);
    }
}

/// A proxy in front of one node.
#[derive(Debug)]
pub struct Proxy {
    /// The address peers dial (the node's advertised address).
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts the proxy of node `to` on its IP, port chosen by the OS.
    pub async fn start(network: Network, to: usize) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(SocketAddr::new(node_ip(to), 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let from = node_of(peer.ip());
                let link = from.map(|f| network.link(f, to)).unwrap_or_default();
                let backend = network.lock().backends.get(&to).copied();
                match (link, backend) {
                    (Link::Cut, _) | (_, None) => drop(inbound),
                    (Link::Blackhole, _) => {
                        let held = tokio::spawn(async move {
                            let _held = inbound;
                            std::future::pending::<()>().await;
                        });
                        if let Some(f) = from {
                            network.track(f, to, held.abort_handle());
                        }
                    }
                    (Link::Slow(delay), Some(backend)) => {
                        let pipe = tokio::spawn(async move {
                            let Ok(outbound) = TcpStream::connect(backend).await else {
                                return;
                            };
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let (ri, wi) = inbound.into_split();
                            let (ro, wo) = outbound.into_split();
                            tokio::join!(delayed_copy(ri, wo, delay), delayed_copy(ro, wi, delay));
                        });
                        if let Some(f) = from {
                            network.track(f, to, pipe.abort_handle());
                        }
                    }
                    (Link::Up, Some(backend)) => {
                        let pipe = tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(backend).await else {
                                return;
                            };
                            let mut inbound = inbound;
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        });
                        if let Some(f) = from {
                            network.track(f, to, pipe.abort_handle());
                        }
                    }
                }
            }
        });
        Ok(Proxy { address, task })
    }
}

/// Copies `from` to `to`, holding each chunk back by `delay`.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
