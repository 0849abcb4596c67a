//! Misbehaving peers against a real endpoint: each test plays one abuse with a committee
//! member's network key over raw QUIC (`dial_raw`) or the real endpoint, shows the bound
//! hold, and shows honest traffic keep flowing. Figures are printed (`--nocapture`).

mod common;

use common::{Recorder, any_addr, keys_for, start, start_with, wait_for};
use keel_p2p::{
    AllowedPeers, EndpointConfig, Handler, Network, NetworkIdentity, Notification, Protocol,
    Request, Response, dial_raw, encode_frame,
};
use keel_types::{
    Batch, ChainId, Epoch, Nonce, PublicKey, TimestampMs, ValidatorIndex,
    test_utils::seeded_key,
    transaction::{MAX_VALUE_LEN, Op, Transaction},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

fn identity(seed: u8) -> NetworkIdentity {
    NetworkIdentity::from_seed(&[seed; 32]).unwrap()
}

/// A batch-lane notification of about `transactions` × 64 KiB.
fn big_batch(sequence: u64, transactions: usize) -> Notification<Vec<u8>> {
    let key = seeded_key("abuse", 0);
    let tx = Transaction {
        chain_id: ChainId(1),
        sender: key.public(),
        nonce: Nonce(sequence),
        expiry: TimestampMs(u64::MAX),
        ops: vec![Op::Put {
            key: b"k".to_vec(),
            value: vec![7; MAX_VALUE_LEN],
        }],
    }
    .sign(&key);
    Notification::Batch(Batch {
        author: ValidatorIndex(0),
        epoch: Epoch(1),
        sequence,
        expires_at: TimestampMs(u64::MAX),
        transactions: vec![tx; transactions],
    })
}

fn counter(network: &Network<Vec<u8>>, read: impl Fn(&keel_p2p::NetworkCounters) -> u64) -> u64 {
    read(network.counters())
}

/// Consensus messages from `node`'s recorder, as numbers (what `ping` sent).
fn pings_from(node: &common::Node, from: PublicKey) -> usize {
    node.recorder
        .seen
        .lock()
        .iter()
        .filter(|(k, _)| *k == from)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_from_the_same_key_replaces_the_first() {
    let keys = keys_for(2);
    let allowed = AllowedPeers::new(keys.clone());
    let victim = start(1, allowed.clone(), any_addr());
    // The attacker holds the allowed key of seed 2 and connects again and again.
    let replaced = || {
        counter(&victim.network, |c| {
            c.replaced_connections.load(Ordering::Relaxed)
        })
    };
    let mut connections = Vec::new();
    for i in 0..10 {
        connections.push(
            dial_raw(&identity(2), allowed.clone(), victim.addr)
                .await
                .unwrap(),
        );
        // The victim registers each connection after its own side of the handshake; wait for
        // it, so that the dial order is the registration order (a later dial could otherwise
        // be registered first on a loaded machine, and the earlier one replace it).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (replaced() < i || victim.network.connected_peers().is_empty())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Every connection but the newest is closed by the victim.
    for (i, c) in connections.iter().enumerate().take(9) {
        let reason = tokio::time::timeout(Duration::from_secs(5), c.closed())
            .await
            .unwrap_or_else(|_| panic!("connection {i} still open"));
        assert!(format!("{reason}").contains("replaced"), "{reason}");
    }
    assert!(connections[9].close_reason().is_none());
    assert_eq!(victim.network.connected_peers(), vec![keys[1]]);
    assert_eq!(
        counter(&victim.network, |c| c
            .replaced_connections
            .load(Ordering::Relaxed)),
        9
    );
    // The surviving connection works.
    let mut send = connections[9].open_uni().await.unwrap();
    let mut frame = vec![Protocol::Consensus.tag()];
    frame.extend(encode_frame(&Notification::<Vec<u8>>::Consensus(vec![5]), 64, "t").unwrap());
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    wait_for("the message", || pings_from(&victim, keys[1]) == 1).await;
    victim.network.shutdown().await;
}

/// A misbehaving peer's stalled streams: how many it could open, the bytes the victim let
/// through before flow control held the writers, and the writers (which keep their streams
/// open, never finishing them, until dropped).
struct Stalled {
    opened: usize,
    written: Arc<AtomicU64>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        for w in &self.writers {
            w.abort();
        }
    }
}

/// Opens up to `streams` notification streams on the batch lane, each announcing `announced`
/// bytes and sending all but the last byte as fast as the victim lets it; a write held for
/// `blocked` counts as held by flow control. Returns once every writer is held.
async fn stall_streams(
    connection: &quinn::Connection,
    streams: usize,
    announced: u32,
    blocked: Duration,
) -> Stalled {
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut opened = 0;
    for _ in 0..streams {
        let Ok(Ok(mut send)) = tokio::time::timeout(blocked, connection.open_uni()).await else {
            break; // the stream limit holds the next one
        };
        opened += 1;
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut head = vec![Protocol::Batches.tag()];
            head.extend_from_slice(&announced.to_be_bytes());
            if send.write_all(&head).await.is_err() {
                return;
            }
            let chunk = vec![0u8; 64 << 10];
            let mut left = announced as usize - 1;
            while left > 0 {
                let n = left.min(chunk.len());
                match tokio::time::timeout(blocked, send.write(&chunk[..n])).await {
                    Ok(Ok(sent)) => {
                        written.fetch_add(sent as u64, Ordering::Relaxed);
                        left -= sent;
                    }
                    Ok(Err(_)) => return, // stopped by the victim
                    Err(_) => {}          // held by flow control: keep trying
                }
            }
            // Never finish: the victim must give up on its own.
            std::future::pending::<()>().await;
            drop(send);
        }));
    }
    // Let the writers run into flow control.
    tokio::time::sleep(blocked * 4).await;
    Stalled {
        opened,
        written,
        writers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_announces_large_frames_and_stalls_pins_bounded_memory_and_loses_its_streams() {
    let keys = keys_for(3);
    let allowed = AllowedPeers::new(keys.clone());
    let config = EndpointConfig {
        listen: any_addr(),
        max_streams: 16,
        frame_timeout: Duration::from_secs(2),
        ..EndpointConfig::default()
    };
    let victim = start_with(1, allowed.clone(), config.clone());
    let honest = start(3, allowed.clone(), any_addr());
    victim.network.add_peer(keys[2], honest.addr);
    honest.network.add_peer(keys[0], victim.addr);
    let attacker = dial_raw(&identity(2), allowed.clone(), victim.addr)
        .await
        .unwrap();

    // Honest consensus traffic keeps flowing throughout.
    let pinger = {
        let network = honest.network.clone();
        let victim_key = keys[0];
        tokio::spawn(async move {
            for _ in 0..40 {
                network
                    .send(&victim_key, &Notification::Consensus(vec![1]))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Streams announcing 16 MiB each: over the batch cap, each refused at its prefix.
    let oversize = stall_streams(&attacker, 16, 16 << 20, Duration::from_millis(300)).await;
    assert_eq!(oversize.opened, 16);
    wait_for("oversize announcements refused", || {
        counter(&victim.network, |c| c.bad_frames.load(Ordering::Relaxed)) >= 16
    })
    .await;
    drop(oversize);

    // 32 streams announcing 5 MiB (within the cap) and stalling one byte short: only the
    // stream limit's worth are open, and the victim holds at most the lane budget plus the
    // connection's receive window on the attacker's behalf.
    let stalled = stall_streams(&attacker, 32, 5 << 20, Duration::from_millis(300)).await;
    let (opened, written) = (stalled.opened, stalled.written.load(Ordering::Relaxed));
    let bound = (config.inbound_bytes + config.receive_window as usize) as u64;
    println!(
        "stalling peer: {opened} streams opened of 32 tried (limit {}), {written} bytes \
         accepted (bound {bound})",
        config.max_streams
    );
    assert!(opened <= config.max_streams as usize, "opened {opened}");
    assert!(written <= bound + (2 << 20), "accepted {written} > {bound}");
    // The stalled streams are dropped by the victim once the frame timeout passes.
    wait_for("stalled frames dropped", || {
        counter(&victim.network, |c| {
            c.stalled_frames.load(Ordering::Relaxed)
        }) >= 3
    })
    .await;
    drop(stalled);

    pinger.await.unwrap();
    assert_eq!(pings_from(&victim, keys[2]), 40, "honest messages lost");
    println!("honest consensus messages: 40 of 40 delivered while the attacker stalled");
    victim.network.shutdown().await;
    honest.network.shutdown().await;
}

/// A handler whose requests take 200 ms of a blocking worker and that records how many ran at
/// once per requester.
#[derive(Default)]
struct SlowServer {
    running: AtomicUsize,
    most: AtomicUsize,
    recorder: Recorder,
}

impl Handler<Vec<u8>> for SlowServer {
    fn on_notification(&self, from: PublicKey, message: Notification<Vec<u8>>) {
        self.recorder.on_notification(from, message);
    }

    fn on_request(&self, _from: PublicKey, _request: Request) -> Response {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Response::SyncStatus {
            committed: keel_types::Height(1),
            retained_from: keel_types::Height(0),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_gets_at_most_its_share_of_workers_and_oversize_requests_are_refused() {
    let keys = keys_for(3);
    let allowed = AllowedPeers::new(keys.clone());
    let server = Arc::new(SlowServer::default());
    let config = EndpointConfig {
        listen: any_addr(),
        max_requests: 4,
        ..EndpointConfig::default()
    };
    let victim = Network::start(config, &identity(1), allowed.clone(), server.clone()).unwrap();
    let victim_addr = victim.local_addr().unwrap();
    let attacker = dial_raw(&identity(2), allowed.clone(), victim_addr)
        .await
        .unwrap();

    // 40 requests at once from one peer.
    let request = encode_frame(&Request::SyncStatus, 64, "t").unwrap();
    let mut flood = Vec::new();
    for _ in 0..40 {
        let connection = attacker.clone();
        let request = request.clone();
        flood.push(tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.ok()?;
            send.write_all(&request).await.ok()?;
            send.finish().ok()?;
            recv.read_to_end(1 << 10).await.ok()
        }));
    }
    // An honest peer's request meanwhile.
    let honest = start(3, allowed.clone(), any_addr());
    honest.network.add_peer(keys[0], victim_addr);
    victim.add_peer(keys[2], honest.addr);
    wait_for("the honest connection", || {
        !honest.network.connected_peers().is_empty()
    })
    .await;
    let asked = Instant::now();
    let answer = honest.network.request(&keys[0], &Request::SyncStatus).await;
    let honest_wait = asked.elapsed();
    assert!(answer.is_ok(), "{answer:?}");
    let mut answered = 0;
    for f in flood {
        if f.await.unwrap().is_some() {
            answered += 1;
        }
    }
    let most = server.most.load(Ordering::SeqCst);
    println!(
        "request flood: 40 requests answered {answered}, at most {most} running at once \
         (limit 4 per peer + 1 honest); honest request answered in {} ms",
        honest_wait.as_millis()
    );
    assert_eq!(answered, 40);
    assert!(most <= 5, "{most} requests ran at once");
    assert!(honest_wait < Duration::from_secs(2), "{honest_wait:?}");

    // A request announcing 16 MiB is refused from its prefix (requests are capped at 64 KiB).
    let bad_before = victim.counters().bad_frames.load(Ordering::Relaxed);
    let (mut send, mut recv) = attacker.open_bi().await.unwrap();
    send.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 10)).await;
    assert!(matches!(refused, Ok(Err(_))), "{refused:?}");
    assert_eq!(
        victim.counters().bad_frames.load(Ordering::Relaxed),
        bad_before + 1
    );
    victim.shutdown().await;
    honest.network.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_flood_neither_evicts_nor_delays_consensus_messages() {
    let keys = keys_for(2);
    let allowed = AllowedPeers::new(keys.clone());
    let config = EndpointConfig {
        listen: any_addr(),
        queue_bytes: 12 << 20,
        ..EndpointConfig::default()
    };
    let sender = start_with(1, allowed.clone(), config.clone());
    // The receiver is down at first: 10 consensus messages, then 100 batches of ~1 MiB.
    let receiver_addr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    sender.network.add_peer(keys[1], receiver_addr);
    for i in 0..10u8 {
        sender
            .network
            .send(&keys[1], &Notification::Consensus(vec![i]))
            .unwrap();
    }
    for n in 0..100 {
        sender.network.send(&keys[1], &big_batch(n, 16)).unwrap();
    }
    let queued = sender.network.queued_bytes();
    let dropped = counter(&sender.network, |c| c.dropped.load(Ordering::Relaxed));
    println!("dead peer after 100 × 1 MiB batches: {queued} bytes queued, {dropped} dropped");
    assert!(queued <= 2 * config.queue_bytes, "{queued} bytes queued");
    assert!(dropped >= 85, "dropped {dropped}");

    // The receiver comes up: all 10 consensus messages arrive (none was evicted by batches).
    let receiver = start(2, allowed, receiver_addr);
    receiver.network.add_peer(keys[0], sender.addr);
    wait_for("the consensus messages", || {
        pings_from(&receiver, keys[0]) >= 10
    })
    .await;

    // A live flood: 200 batches of ~1 MiB while consensus pings go every 20 ms.
    let flood_started = Instant::now();
    for n in 0..200 {
        sender
            .network
            .send(&keys[1], &big_batch(100 + n, 16))
            .unwrap();
    }
    let mut worst = Duration::ZERO;
    for i in 0..25u32 {
        let before = pings_from(&receiver, keys[0]);
        let sent = Instant::now();
        sender
            .network
            .send(&keys[1], &Notification::Consensus(i.to_be_bytes().to_vec()))
            .unwrap();
        wait_for("a ping", || pings_from(&receiver, keys[0]) > before).await;
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let batches_in = receiver.network.counters().received.load(Ordering::Relaxed);
    println!(
        "live batch flood: slowest of 25 consensus pings {} ms; {} notifications received \
         in {} ms",
        worst.as_millis(),
        batches_in,
        flood_started.elapsed().as_millis()
    );
    assert!(
        worst < Duration::from_millis(1_000),
        "a ping took {worst:?}"
    );
    sender.network.shutdown().await;
    receiver.network.shutdown().await;
}
