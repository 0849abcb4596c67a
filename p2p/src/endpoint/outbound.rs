//! Outbound: one queue per peer and lane, drained by one task per peer and lane.
//!
//! A lane's queue is bounded in frames (`queue_capacity`) and in bytes (`queue_bytes`); when a
//! new frame would exceed either, the *oldest* frames are dropped (and counted): for consensus
//! and batch gossip the newest message supersedes older ones, and a slow or dead peer must not
//! hold memory. The consensus lane's task never waits behind the batch lane's (each writes its
//! own streams, and consensus streams have the higher QUIC priority), so a batch flood can
//! neither delay nor evict consensus messages.

use super::{Inner, io, remote_key};
use crate::{
    address::{PeerAddress, Resolver},
    protocol::{LANES, Protocol},
};
use keel_types::PublicKey;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::sync::Notify;

/// First wait between dial attempts (doubles up to `max_backoff`), and how often a peer that
/// dials us is looked for.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Frames waiting for one peer on one lane.
#[derive(Default)]
struct LaneQueue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct Lane {
    queue: Mutex<LaneQueue>,
    ready: Notify,
}

/// What this node keeps for one peer it sends to.
pub(super) struct Peer {
    address: Resolver,
    lanes: [Lane; LANES.len()],
    /// Held while dialling (one dial at a time for both lanes); holds the current back-off.
    dialing: tokio::sync::Mutex<Duration>,
    /// Signalled when a connection to the peer is registered.
    pub(super) connected: Notify,
    /// Set when the peer is removed: its sender tasks stop.
    removed: AtomicBool,
}

impl Peer {
    pub(super) fn new(address: PeerAddress) -> Self {
        Peer {
            address: Resolver::new(address),
            lanes: Default::default(),
            dialing: tokio::sync::Mutex::new(FIRST_BACKOFF),
            connected: Notify::new(),
            removed: AtomicBool::new(false),
        }
    }

    fn lane(&self, protocol: Protocol) -> &Lane {
        &self.lanes[lane_index(protocol)]
    }

    /// Queues `frame` on `protocol`'s lane, dropping the oldest frames while the lane would
    /// hold more than `capacity` frames or `max_bytes` bytes. Returns how many were dropped.
    pub(super) fn enqueue(
        &self,
        protocol: Protocol,
        frame: Vec<u8>,
        capacity: usize,
        max_bytes: usize,
    ) -> u64 {
        let lane = self.lane(protocol);
        let mut dropped = 0;
        {
            let mut queue = lane.queue.lock();
            while !queue.frames.is_empty()
                && (queue.frames.len() >= capacity || queue.bytes + frame.len() > max_bytes)
            {
                if let Some(old) = queue.frames.pop_front() {
                    queue.bytes -= old.len();
                    dropped += 1;
                }
            }
            queue.bytes += frame.len();
            queue.frames.push_back(frame);
        }
        lane.ready.notify_one();
        dropped
    }

    /// Frame bytes queued on every lane.
    pub(super) fn queued_bytes(&self) -> usize {
        self.lanes.iter().map(|l| l.queue.lock().bytes).sum()
    }

    /// Puts back a frame whose send failed, at the front (it keeps its place).
    fn push_front(&self, protocol: Protocol, frame: Vec<u8>) {
        let mut queue = self.lane(protocol).queue.lock();
        queue.bytes += frame.len();
        queue.frames.push_front(frame);
    }

    fn pop(&self, protocol: Protocol) -> Option<Vec<u8>> {
        let mut queue = self.lane(protocol).queue.lock();
        let frame = queue.frames.pop_front()?;
        queue.bytes -= frame.len();
        Some(frame)
    }

    /// Wakes every task of this peer (after a removal, an identity change or shutdown).
    pub(super) fn wake(&self) {
        for lane in &self.lanes {
            lane.ready.notify_one();
        }
        self.connected.notify_waiters();
    }

    /// Stops the peer's tasks; its queued frames are dropped with it.
    pub(super) fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.wake();
    }

    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

fn lane_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Consensus => 0,
        // Sync never travels as a notification; give it the bulk lane rather than panic.
        Protocol::Batches | Protocol::Sync => 1,
    }
}

/// Starts the sender tasks of a new peer.
pub(super) fn spawn_senders<C: DeserializeOwned + Send + Sync + 'static>(
    inner: &Arc<Inner<C>>,
    key: PublicKey,
    peer: &Arc<Peer>,
) {
    for protocol in LANES {
        tokio::spawn(lane_sender(inner.clone(), key, peer.clone(), protocol));
    }
}

/// Drains one lane of one peer while the peer is kept and the endpoint runs.
async fn lane_sender<C: DeserializeOwned + Send + Sync + 'static>(
    inner: Arc<Inner<C>>,
    key: PublicKey,
    peer: Arc<Peer>,
    protocol: Protocol,
) {
    // Consensus streams go out before batch streams when both have data.
    let priority = if protocol == Protocol::Consensus {
        1
    } else {
        0
    };
    // A frame whose send failed once is retried once, on the next connection.
    let mut retried = false;
    while !inner.is_shut_down() && !peer.is_removed() {
        let Some(connection) = connection_to(&inner, key, &peer).await else {
            continue;
        };
        match peer.pop(protocol) {
            Some(frame) => {
                let sent = async {
                    let mut send = connection.open_uni().await.map_err(io)?;
                    let _ = send.set_priority(priority);
                    send.write_all(&frame).await.map_err(io)?;
                    send.finish().map_err(io)
                };
                if sent.await.is_err() {
                    // Connection lost or replaced: retry the frame once on the next one (the
                    // loop reconnects); a second failure drops it.
                    if retried {
                        retried = false;
                        inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        retried = true;
                        peer.push_front(protocol, frame);
                    }
                } else {
                    retried = false;
                    inner
                        .counters
                        .bytes_sent
                        .fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
            }
            None => {
                tokio::select! {
                    _ = peer.lane(protocol).ready.notified() => {}
                    _ = connection.closed() => {}
                }
            }
        }
    }
}

/// The live connection to `key`: the registered one, or (if this node has the smaller key,
/// so it is the dialer) a new one. `None` after a failed dial or a wait for the peer to dial
/// us; the caller loops.
async fn connection_to<C: DeserializeOwned + Send + Sync + 'static>(
    inner: &Arc<Inner<C>>,
    key: PublicKey,
    peer: &Peer,
) -> Option<quinn::Connection> {
    if let Some(c) = inner.live_connection(&key) {
        return Some(c);
    }
    // Read each time: the identity may change (key rotation).
    let dialer = *inner.me.lock() < key;
    if !dialer || !inner.allowed.contains(&key) {
        // The peer dials us (or is not allowed yet): wait until it has, or retry later.
        let _ = tokio::time::timeout(FIRST_BACKOFF, peer.connected.notified()).await;
        return None;
    }
    let mut backoff = peer.dialing.lock().await;
    if let Some(c) = inner.live_connection(&key) {
        return Some(c); // the other lane dialled meanwhile
    }
    if inner.is_shut_down() || peer.is_removed() {
        return None;
    }
    let address = peer.address.resolve(inner.endpoint.local_addr().ok()).await;
    if inner.is_shut_down() || peer.is_removed() {
        return None; // while the name was looked up
    }
    // Read after the lookup (which may take seconds): the identity may have changed meanwhile.
    let (client, generation) = {
        let client = inner.client.lock();
        (client.clone(), inner.generation.load(Ordering::Acquire))
    };
    let name = crate::identity::server_name_for(&key);
    let dialled = match address.map(|address| inner.endpoint.connect_with(client, address, &name)) {
        Some(Ok(connecting)) => connecting.await.ok(),
        Some(Err(_)) | None => None,
    };
    match dialled {
        // The handshake proved an allowed key: it must be the one dialled.
        Some(c) if remote_key(&c) == Some(key) => {
            *backoff = FIRST_BACKOFF;
            // Registered before the dial lock is released, so the other lane finds it.
            if !super::inbound::register(inner, key, &c, generation) {
                return None;
            }
            tokio::spawn(super::inbound::serve(inner.clone(), key, c.clone()));
            Some(c)
        }
        other => {
            if let Some(c) = other {
                c.close(0u32.into(), b"not the key dialled");
            }
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(inner.config.max_backoff);
            None
        }
    }
}
