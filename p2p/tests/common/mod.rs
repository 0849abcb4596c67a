//! Helpers shared by the endpoint tests: endpoints on loopback whose handler records what
//! arrives.
#![allow(dead_code)]

use keel_p2p::{
    AllowedPeers, EndpointConfig, Handler, Network, NetworkIdentity, Notification, Request,
    Response,
};
use keel_types::PublicKey;
use parking_lot::Mutex;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<(PublicKey, Vec<u8>)>>,
}

impl Handler<Vec<u8>> for Recorder {
    fn on_notification(&self, from: PublicKey, message: Notification<Vec<u8>>) {
        if let Notification::Consensus(bytes) = message {
            self.seen.lock().push((from, bytes));
        }
    }

    fn on_request(&self, _from: PublicKey, request: Request) -> Response {
        match request {
            Request::Blocks { digests } => Response::Refused(format!("{} digests", digests.len())),
            _ => Response::Refused("unsupported".into()),
        }
    }
}

pub struct Node {
    pub identity: NetworkIdentity,
    pub network: Network<Vec<u8>>,
    pub recorder: Arc<Recorder>,
    pub addr: SocketAddr,
}

pub fn start(seed: u8, allowed: Arc<AllowedPeers>, listen: SocketAddr) -> Node {
    start_with(
        seed,
        allowed,
        EndpointConfig {
            listen,
            ..EndpointConfig::default()
        },
    )
}

pub fn start_with(seed: u8, allowed: Arc<AllowedPeers>, config: EndpointConfig) -> Node {
    let identity = NetworkIdentity::from_seed(&[seed; 32]).unwrap();
    let recorder = Arc::new(Recorder::default());
    let network = Network::start(config, &identity, allowed, recorder.clone()).unwrap();
    let addr = network.local_addr().unwrap();
    Node {
        identity,
        network,
        recorder,
        addr,
    }
}

pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn any_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The network keys of seeds 1..=n.
pub fn keys_for(n: u8) -> Vec<PublicKey> {
    (1..=n)
        .map(|s| NetworkIdentity::from_seed(&[s; 32]).unwrap().public())
        .collect()
}

/// `n` endpoints (seeds 1..=n) that all allow and know each other.
pub fn mesh(n: u8) -> (Vec<PublicKey>, Vec<Node>) {
    let keys = keys_for(n);
    let allowed = AllowedPeers::new(keys.clone());
    let nodes: Vec<Node> = (1..=n)
        .map(|s| start(s, allowed.clone(), any_addr()))
        .collect();
    for a in &nodes {
        for b in &nodes {
            if a.identity.public() != b.identity.public() {
                a.network.add_peer(b.identity.public(), b.addr);
            }
        }
    }
    (keys, nodes)
}
