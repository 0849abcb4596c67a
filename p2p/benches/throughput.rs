//! Loopback throughput of two QUIC endpoints (a bench binary: `cargo bench -p keel-p2p`).
//!
//! Prints messages/s and MB/s for 512-byte and 512-KiB notifications, and request/response
//! round trips per second.

use keel_p2p::{
    AllowedPeers, EndpointConfig, Handler, Network, NetworkIdentity, Notification, Request,
    Response,
};
use keel_types::PublicKey;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

#[derive(Default)]
struct Count {
    messages: AtomicU64,
}

impl Handler<Vec<u8>> for Count {
    fn on_notification(&self, _from: PublicKey, _message: Notification<Vec<u8>>) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }
    fn on_request(&self, _from: PublicKey, _request: Request) -> Response {
        Response::Checkpoint(None)
    }
}

async fn run() {
    let a_id = NetworkIdentity::from_seed(&[1; 32]).unwrap();
    let b_id = NetworkIdentity::from_seed(&[2; 32]).unwrap();
    let allowed = AllowedPeers::new([a_id.public(), b_id.public()]);
    let config = EndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Room for every message of a run: the bench measures the link, not drops.
        queue_capacity: 1 << 20,
        queue_bytes: 512 << 20,
        ..EndpointConfig::default()
    };
    let a_count = Arc::new(Count::default());
    let b_count = Arc::new(Count::default());
    let a = Network::start(config.clone(), &a_id, allowed.clone(), a_count).unwrap();
    let b = Network::start(config, &b_id, allowed, b_count.clone()).unwrap();
    a.add_peer(b_id.public(), b.local_addr().unwrap());
    b.add_peer(a_id.public(), a.local_addr().unwrap());
    while !a.connected_peers().contains(&b_id.public()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (size, count) in [(512usize, 50_000u64), (512 * 1024, 400)] {
        let before = b_count.messages.load(Ordering::Relaxed);
        let payload = Notification::Consensus(vec![7u8; size]);
        let start = Instant::now();
        for _ in 0..count {
            a.send(&b_id.public(), &payload).unwrap();
        }
        while b_count.messages.load(Ordering::Relaxed) < before + count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "notifications of {size} bytes: {:.0} msg/s, {:.1} MB/s ({count} messages)",
            count as f64 / secs,
            (count as f64 * size as f64) / secs / 1e6
        );
    }
    let n = 5_000u32;
    let start = Instant::now();
    for _ in 0..n {
        a.request(&b_id.public(), &Request::LatestCheckpoint)
            .await
            .unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "request/response round trips (sequential): {:.0}/s ({:.0} us each)",
        f64::from(n) / secs,
        secs / f64::from(n) * 1e6
    );
    a.shutdown().await;
    b.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}
