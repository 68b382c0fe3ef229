//! Bad input on the transport port (DESIGN §4.8).

use raftengine::Factory;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Cluster;
use crate::kv::put;

/// Garbage bytes, a bogus HTTP/1 request and a bogus HTTP/2 preface sent to
/// every node's transport port are refused without harming the node: the
/// cluster keeps committing afterwards.
pub async fn garbage_on_the_transport_port_is_harmless<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let payloads: [&[u8]; 4] = [
        b"\x00\xff\x13\x37garbage garbage garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff",
        &[0xAB; 70_000],
    ];
    for n in &c.nodes {
        // Straight at the node's own listener, bypassing the proxy.
        for p in payloads {
            if let Ok(mut s) = tokio::net::TcpStream::connect(n.backend).await {
                let _ = s.write_all(p).await;
                let mut buf = [0u8; 256];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf))
                        .await;
            }
        }
    }
    for i in 0..10 {
        c.engine(l)
            .propose(put(format!("after-garbage{i}"), "ok"))
            .await
            .expect("put after garbage");
    }
    for n in &c.nodes {
        assert!(n.engine().status().term > 0, "{} stopped answering", n.id);
    }
    c.shutdown().await;
}
