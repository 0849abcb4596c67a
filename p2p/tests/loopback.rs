//! Real QUIC endpoints on loopback: notifications and requests flow between allowed peers, a
//! peer outside the allowed set reaches no handler, and traffic resumes after a restart.

mod common;

use common::{any_addr, keys_for, mesh, start, start_with, wait_for};
use keel_p2p::{
    AllowedPeers, EndpointConfig, Handler, Network, NetworkIdentity, Notification, Protocol,
    Request, Response,
};
use keel_types::{Digest, PublicKey};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_endpoints_exchange_notifications_and_requests() {
    let (keys, nodes) = mesh(4u8);
    for (i, n) in nodes.iter().enumerate() {
        n.network
            .broadcast(&Notification::Consensus(vec![i as u8]))
            .unwrap();
    }
    for n in &nodes {
        wait_for("three notifications each", || {
            n.recorder.seen.lock().len() == 3
        })
        .await;
    }
    // Each node heard exactly the other three, each under its authenticated key.
    for (i, n) in nodes.iter().enumerate() {
        let mut seen = n.recorder.seen.lock().clone();
        seen.sort();
        for (from, bytes) in seen {
            let j = keys.iter().position(|k| *k == from).unwrap();
            assert_ne!(i, j);
            assert_eq!(bytes, vec![j as u8]);
        }
    }
    let response = nodes[0]
        .network
        .request(
            &nodes[2].identity.public(),
            &Request::Blocks {
                digests: vec![Digest::of_bytes(b"x"); 3],
            },
        )
        .await
        .unwrap();
    assert_eq!(response, Response::Refused("3 digests".into()));
    for n in &nodes {
        n.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_reaches_no_handler() {
    let a_key = NetworkIdentity::from_seed(&[1; 32]).unwrap().public();
    let b_key = NetworkIdentity::from_seed(&[2; 32]).unwrap().public();
    let stranger_key = NetworkIdentity::from_seed(&[0; 32]).unwrap().public();
    let committee = AllowedPeers::new([a_key, b_key]);
    let a = start(1, committee.clone(), any_addr());
    let b = start(2, committee, any_addr());
    // The stranger (smallest key, so it dials) trusts B, but B does not know it.
    let stranger = start(0, AllowedPeers::new([b_key, stranger_key]), any_addr());
    a.network.add_peer(b_key, b.addr);
    b.network.add_peer(a_key, a.addr);
    stranger.network.add_peer(b_key, b.addr);
    stranger
        .network
        .send(&b_key, &Notification::Consensus(vec![66]))
        .unwrap();
    a.network
        .send(&b_key, &Notification::Consensus(vec![1]))
        .unwrap();
    wait_for("A's message at B", || !b.recorder.seen.lock().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = b.recorder.seen.lock().clone();
    assert_eq!(
        seen,
        vec![(a_key, vec![1])],
        "only A's message reached B's handler"
    );
    assert!(!b.network.connected_peers().contains(&stranger_key));
    for n in [&a, &b, &stranger] {
        n.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_resumes_after_a_peer_restarts() {
    let a_key = NetworkIdentity::from_seed(&[1; 32]).unwrap().public();
    let b_key = NetworkIdentity::from_seed(&[2; 32]).unwrap().public();
    let allowed = AllowedPeers::new([a_key, b_key]);
    let a = start(1, allowed.clone(), any_addr());
    let b = start(2, allowed.clone(), any_addr());
    a.network.add_peer(b_key, b.addr);
    b.network.add_peer(a_key, a.addr);
    a.network
        .send(&b_key, &Notification::Consensus(vec![1]))
        .unwrap();
    wait_for("first message", || b.recorder.seen.lock().len() == 1).await;
    // B goes away and comes back on the same address; A (the dialer) reconnects.
    let b_addr = b.addr;
    b.network.shutdown().await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b2 = start(2, allowed, b_addr);
    b2.network.add_peer(a_key, a.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    while b2.recorder.seen.lock().is_empty() {
        assert!(Instant::now() < deadline, "no traffic after restart");
        a.network
            .send(&b_key, &Notification::Consensus(vec![2]))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b2.recorder.seen.lock()[0], (a_key, vec![2]));
    a.network.shutdown().await;
    b2.network.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_is_refused_and_the_endpoint_keeps_serving() {
    let (keys, nodes) = mesh(3u8);
    let target = keys[1];
    let raw = |lane, bytes| nodes[0].network.send_raw_frame(&target, lane, bytes);
    let announcing = |size: u32| {
        let mut bad = size.to_be_bytes().to_vec();
        bad.extend_from_slice(&[7; 64]);
        bad
    };
    // Frames over their lane's cap, then garbage: 6 MiB on the batch lane (cap 5 MiB), and
    // 3 MiB on the consensus lane (cap 2 MiB, although the batch lane would take it).
    raw(Protocol::Batches, announcing(6 << 20));
    raw(Protocol::Consensus, announcing(3 << 20));
    // An undecodable frame within the cap.
    raw(Protocol::Consensus, vec![0, 0, 0, 3, 0xee, 0xee, 0xee]);
    // A well-formed consensus message on the batch lane.
    let wrong = keel_p2p::encode_frame(&Notification::<Vec<u8>>::Consensus(vec![9]), 64, "t");
    raw(Protocol::Batches, wrong.unwrap());
    // A stream naming no lane.
    raw(Protocol::Sync, announcing(3));
    nodes[0]
        .network
        .send(&target, &Notification::Consensus(vec![1]))
        .unwrap();
    nodes[2]
        .network
        .send(&target, &Notification::Consensus(vec![3]))
        .unwrap();
    wait_for("both good messages", || {
        nodes[1].recorder.seen.lock().len() == 2
    })
    .await;
    // Streams are read concurrently: the refusals may land after the good messages.
    wait_for("five refused frames", || {
        nodes[1]
            .network
            .counters()
            .bad_frames
            .load(std::sync::atomic::Ordering::Relaxed)
            == 5
    })
    .await;
    for n in &nodes {
        n.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_does_not_delay_the_others() {
    let keys = keys_for(3);
    let allowed = AllowedPeers::new(keys.clone());
    let config = EndpointConfig {
        listen: any_addr(),
        queue_capacity: 1_024,
        ..EndpointConfig::default()
    };
    let a = start_with(1, allowed.clone(), config);
    let b = start(2, allowed.clone(), any_addr());
    let c = start(3, allowed, any_addr());
    a.network.add_peer(keys[1], b.addr);
    a.network.add_peer(keys[2], c.addr);
    c.network.add_peer(keys[0], a.addr);
    // B goes silent for good; A keeps broadcasting in batches that C's queue can hold.
    b.network.shutdown().await;
    let started = Instant::now();
    for batch in 0..5u32 {
        for i in 0..1_000u32 {
            let n = batch * 1_000 + i;
            a.network
                .broadcast(&Notification::Consensus(n.to_be_bytes().to_vec()))
                .unwrap();
        }
        let want = (batch as usize + 1) * 1_000;
        wait_for("C to keep up", || c.recorder.seen.lock().len() == want).await;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // Nothing for C was lost; B's queue stayed bounded by dropping its oldest messages.
    let dropped = a
        .network
        .counters()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 5_000 - 1_024, "dropped {dropped}");
    a.network.shutdown().await;
    c.network.shutdown().await;
}

/// A receiver that accepts the connection but never gets through its messages (its handler
/// blocks, on its own runtime) must not slow delivery from the same sender to others.
struct Stalled;

impl Handler<Vec<u8>> for Stalled {
    fn on_notification(&self, _from: PublicKey, _message: Notification<Vec<u8>>) {
        std::thread::sleep(Duration::from_secs(3600));
    }
    fn on_request(&self, _from: PublicKey, _request: Request) -> Response {
        Response::Refused("stalled".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_does_not_delay_the_others() {
    let keys = keys_for(3);
    let allowed = AllowedPeers::new(keys.clone());
    let a_config = EndpointConfig {
        listen: any_addr(),
        request_timeout: Duration::from_millis(300),
        ..EndpointConfig::default()
    };
    let a = start_with(1, allowed.clone(), a_config);
    let c = start(3, allowed.clone(), any_addr());
    // B runs on its own single-threaded runtime, which its handler then blocks for good.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let b_allowed = allowed.clone();
    let a_addr = a.addr;
    let a_key = keys[0];
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let identity = NetworkIdentity::from_seed(&[2; 32]).unwrap();
            let network = Network::start(
                EndpointConfig {
                    listen: any_addr(),
                    ..EndpointConfig::default()
                },
                &identity,
                b_allowed,
                Arc::new(Stalled),
            )
            .unwrap();
            network.add_peer(a_key, a_addr);
            addr_tx.send(network.local_addr().unwrap()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let b_addr = addr_rx.recv().unwrap();
    a.network.add_peer(keys[1], b_addr);
    a.network.add_peer(keys[2], c.addr);
    c.network.add_peer(keys[0], a.addr);
    // The first message stalls B; everything after piles up towards it.
    a.network
        .send(&keys[1], &Notification::Consensus(vec![0; 1024]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for i in 0..500u32 {
        a.network
            .send(&keys[1], &Notification::Consensus(vec![1; 64 * 1024]))
            .unwrap();
        a.network
            .send(&keys[2], &Notification::Consensus(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    wait_for("C to get all 500", || c.recorder.seen.lock().len() == 500).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "C was slowed down: {:?}",
        started.elapsed()
    );
    // A request to the stalled peer fails at the timeout instead of hanging.
    let asked = Instant::now();
    let answer = a
        .network
        .request(&keys[1], &Request::LatestCheckpoint)
        .await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(asked.elapsed() < Duration::from_secs(2));
    a.network.shutdown().await;
    c.network.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_identity_is_reached_under_its_new_key_and_the_old_key_is_dropped() {
    let keys = keys_for(3); // seed 3 is node 2's next identity
    let a = start(1, AllowedPeers::new(keys.clone()), any_addr());
    let b = start(2, AllowedPeers::new(keys.clone()), any_addr());
    a.network.add_peer(keys[1], b.addr);
    b.network.add_peer(keys[0], a.addr);
    a.network
        .send(&keys[1], &Notification::Consensus(vec![1]))
        .unwrap();
    wait_for("b hears a", || b.recorder.seen.lock().len() == 1).await;

    b.network
        .set_identity(&NetworkIdentity::from_seed(&[3; 32]).unwrap())
        .unwrap();
    assert_eq!(b.network.identity(), keys[2]);
    // A moves to the new key (as at an epoch change): the old one is no longer allowed.
    a.network.set_allowed([keys[0], keys[2]]);
    a.network.remove_peer(&keys[1]);
    a.network.add_peer(keys[2], b.addr);
    b.network
        .send(&keys[0], &Notification::Consensus(vec![2]))
        .unwrap();
    wait_for("a hears b under its new key", || {
        a.recorder.seen.lock().contains(&(keys[2], vec![2]))
    })
    .await;
    a.network
        .send(&keys[2], &Notification::Consensus(vec![3]))
        .unwrap();
    wait_for("b hears a after the rotation", || {
        b.recorder.seen.lock().contains(&(keys[0], vec![3]))
    })
    .await;
    assert_eq!(a.network.connected_peers(), vec![keys[2]]);
    assert!(
        a.recorder.seen.lock().iter().all(|(k, _)| *k != keys[1]),
        "nothing arrived under the old key after the rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_answered_by_another_allowed_key_is_not_taken_for_the_dialled_peer() {
    // Three allowed keys; the dialler (the smallest) expects `wanted` at an address where
    // `other` answers. The connection must not be recorded as `wanted`'s.
    let mut seeds: Vec<(PublicKey, u8)> = (1..=3u8)
        .map(|s| (NetworkIdentity::from_seed(&[s; 32]).unwrap().public(), s))
        .collect();
    seeds.sort();
    let keys: Vec<PublicKey> = seeds.iter().map(|(k, _)| *k).collect();
    let (dialler, wanted, other) = (seeds[0].1, keys[1], seeds[2].1);
    let a = start(dialler, AllowedPeers::new(keys.clone()), any_addr());
    let c = start(other, AllowedPeers::new(keys.clone()), any_addr());
    a.network.add_peer(wanted, c.addr);
    a.network
        .send(&wanted, &Notification::Consensus(vec![7]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        a.network.connected_peers().is_empty(),
        "{:?}",
        a.network.connected_peers()
    );
    assert!(
        c.recorder.seen.lock().is_empty(),
        "the message reached the wrong peer"
    );
    // The handshake itself fails (the dial names the key it expects), so the answering
    // endpoint never registers the dialler either: it cannot replace a good connection with
    // it (after a key rotation, the old key's dials reach the new key's endpoint).
    assert!(
        c.network.connected_peers().is_empty(),
        "{:?}",
        c.network.connected_peers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_named_by_host_name_are_looked_up_and_dialled() {
    let a_key = NetworkIdentity::from_seed(&[1; 32]).unwrap().public();
    let b_key = NetworkIdentity::from_seed(&[2; 32]).unwrap().public();
    let c_key = NetworkIdentity::from_seed(&[3; 32]).unwrap().public();
    let allowed = AllowedPeers::new([a_key, b_key, c_key]);
    let a = start(1, allowed.clone(), any_addr());
    let b = start(2, allowed, any_addr());
    // Whichever of A and B dials, it dials a name. C's name never resolves: its failing
    // lookups must not hold up A and B.
    let name = |port: u16| format!("localhost:{port}").parse::<keel_p2p::PeerAddress>();
    a.network.add_peer(b_key, name(b.addr.port()).unwrap());
    b.network.add_peer(a_key, name(a.addr.port()).unwrap());
    for n in [&a, &b] {
        n.network.add_peer(
            c_key,
            "keel-c.invalid:7000"
                .parse::<keel_p2p::PeerAddress>()
                .unwrap(),
        );
        n.network
            .send(&c_key, &Notification::Consensus(vec![0]))
            .unwrap();
    }
    a.network
        .send(&b_key, &Notification::Consensus(vec![1]))
        .unwrap();
    b.network
        .send(&a_key, &Notification::Consensus(vec![2]))
        .unwrap();
    wait_for("A's message at B", || !b.recorder.seen.lock().is_empty()).await;
    wait_for("B's message at A", || !a.recorder.seen.lock().is_empty()).await;
    assert_eq!(b.recorder.seen.lock()[0], (a_key, vec![1]));
    assert_eq!(a.recorder.seen.lock()[0], (b_key, vec![2]));
    for n in [&a, &b] {
        n.network.shutdown().await;
    }
}
