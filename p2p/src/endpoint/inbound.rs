//! Inbound: accepted connections, their streams, and bounded frame reads.
//!
//! - One connection per peer key: a newer connection from a key replaces (and closes) the
//!   older one, so a peer cannot multiply its streams and budgets by connecting again.
//! - A peer has at most `max_streams` notification streams and `max_requests` requests open
//!   at once (QUIC's stream limits), each served on its own task.
//! - A notification stream opens with its lane's tag; its frame is capped by that lane's
//!   protocol and must decode to a notification of that lane. The payload is read only once
//!   the peer's budget for the lane (`inbound_bytes`) has room for the announced length, and
//!   grows as bytes arrive, so a peer that announces a large frame and stalls pins neither
//!   memory it did not send nor the stream: every read waits at most `frame_timeout`.
//! - Requests are capped at [`MAX_REQUEST_BYTES`] and answered on the blocking pool, so
//!   storage reads never run on the async workers; `max_requests` is the peer's share of it.

use super::{Inner, io};
use crate::{
    error::{Error, Result},
    frame::{LENGTH_PREFIX, check_length, decode_payload, encode_frame},
    protocol::{LANES, MAX_REQUEST_BYTES, Notification, Protocol, Request},
};
use keel_types::PublicKey;
use serde::de::DeserializeOwned;
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio::sync::Semaphore;

/// Accepts connections until the endpoint closes.
pub(super) async fn accept_loop<C: DeserializeOwned + Send + Sync + 'static>(inner: Arc<Inner<C>>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        let generation = inner.generation.load(Ordering::Acquire);
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return; // handshake refused (not an allowed peer) or failed
            };
            if let Some(key) = super::remote_key(&connection)
                && register(&inner, key, &connection, generation)
            {
                serve(inner, key, connection).await;
            }
        });
    }
}

/// Records `connection` as the one to `key`, closing an older connection from the same key.
/// Refuses (and closes) it if the key is no longer allowed or this node's identity changed
/// since the handshake began.
pub(super) fn register<C>(
    inner: &Inner<C>,
    key: PublicKey,
    connection: &quinn::Connection,
    generation: u64,
) -> bool {
    let replaced = {
        let mut connections = inner.connections.lock();
        // Under the lock that `set_allowed` takes to close connections of removed keys.
        if !inner.allowed.contains(&key) {
            // Allowed at the handshake, removed since (an epoch change in between).
            connection.close(0u32.into(), b"not allowed");
            return false;
        }
        if inner.generation.load(Ordering::Acquire) != generation {
            // The handshake ran under the identity this node presented before a rotation.
            connection.close(0u32.into(), b"identity changed");
            return false;
        }
        connections.insert(key, connection.clone())
    };
    if let Some(old) = replaced
        && old.stable_id() != connection.stable_id()
    {
        old.close(0u32.into(), b"replaced by a newer connection");
        inner
            .counters
            .replaced_connections
            .fetch_add(1, Ordering::Relaxed);
    }
    if let Some(peer) = inner.peers.lock().get(&key) {
        peer.connected.notify_waiters();
    }
    true
}

/// Serves a registered connection's incoming streams until it closes.
pub(super) async fn serve<C: DeserializeOwned + Send + Sync + 'static>(
    inner: Arc<Inner<C>>,
    key: PublicKey,
    connection: quinn::Connection,
) {
    let requests = {
        let inner = inner.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(answer(inner.clone(), key, send, recv));
            }
        })
    };
    let budgets: Arc<[Semaphore; LANES.len()]> = Arc::new(
        LANES.map(|_| Semaphore::new(inner.config.inbound_bytes.min(Semaphore::MAX_PERMITS))),
    );
    while let Ok(recv) = connection.accept_uni().await {
        tokio::spawn(notification(inner.clone(), key, recv, budgets.clone()));
    }
    requests.abort();
    let mut connections = inner.connections.lock();
    if connections
        .get(&key)
        .is_some_and(|c| c.stable_id() == connection.stable_id())
    {
        connections.remove(&key);
    }
}

/// Reads one notification stream: its lane tag, then one frame within the lane's cap and
/// budget, and hands the message to the handler.
async fn notification<C: DeserializeOwned + Send + Sync + 'static>(
    inner: Arc<Inner<C>>,
    key: PublicKey,
    mut recv: quinn::RecvStream,
    budgets: Arc<[Semaphore; LANES.len()]>,
) {
    let timeout = inner.config.frame_timeout;
    let read = async {
        let mut tag = [0u8; 1];
        within(timeout, recv.read_exact(&mut tag)).await?;
        let lane = Protocol::lane_of(tag[0]).ok_or_else(|| Error::Decode {
            protocol: "notification",
            reason: format!("unknown lane {}", tag[0]),
        })?;
        let budget = &budgets[LANES.iter().position(|l| *l == lane).unwrap_or(0)];
        let message: Notification<C> = read_frame(
            &mut recv,
            lane.frame_limit(),
            lane.name(),
            &inner.counters,
            Some(budget),
            timeout,
        )
        .await?;
        if message.protocol() != lane {
            return Err(Error::Decode {
                protocol: lane.name(),
                reason: format!("a {} notification on this lane", message.protocol().name()),
            });
        }
        Ok(message)
    };
    match read.await {
        Ok(message) => {
            inner.counters.received.fetch_add(1, Ordering::Relaxed);
            inner.handler.on_notification(key, message);
        }
        Err(e) => {
            refused(&inner.counters, key, &e);
            let _ = recv.stop(1u32.into());
        }
    }
}

/// Reads one request, answers it on the blocking pool and writes the response.
async fn answer<C: DeserializeOwned + Send + Sync + 'static>(
    inner: Arc<Inner<C>>,
    key: PublicKey,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let timeout = inner.config.frame_timeout;
    let request = read_frame::<Request>(
        &mut recv,
        MAX_REQUEST_BYTES,
        "sync request",
        &inner.counters,
        None,
        timeout,
    )
    .await;
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            refused(&inner.counters, key, &e);
            // No answer: the requester sees its stream reset, not an empty response.
            let _ = recv.stop(1u32.into());
            let _ = send.reset(1u32.into());
            return;
        }
    };
    // Answers read storage: off the async workers.
    let serving = inner.clone();
    let Ok(response) =
        tokio::task::spawn_blocking(move || serving.handler.on_request(key, request)).await
    else {
        return;
    };
    let limit = Protocol::Sync.frame_limit();
    if let Ok(frame) = encode_frame(&response, limit, "sync") {
        inner
            .counters
            .bytes_sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        // A requester that stops reading loses its answer after the request timeout.
        let _ = tokio::time::timeout(inner.config.request_timeout, async {
            let _ = send.write_all(&frame).await;
            let _ = send.finish();
        })
        .await;
    }
}

/// Counts (and logs) a refused inbound frame.
fn refused(counters: &super::NetworkCounters, peer: PublicKey, error: &Error) {
    if matches!(error, Error::Stalled { .. }) {
        counters.stalled_frames.fetch_add(1, Ordering::Relaxed);
    }
    counters.bad_frames.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%peer, %error, "bad frame");
}

/// `read` within `timeout`, a stall otherwise.
async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    read: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result.map_err(io),
        Err(_) => Err(Error::Stalled {
            waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// Reads one frame: the length prefix, checked against `limit` before anything is allocated;
/// then (after taking `size` bytes of `budget`, if any) the payload, which must end the
/// stream. Each of the two reads waits at most `timeout`.
pub(super) async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: usize,
    protocol: &'static str,
    counters: &super::NetworkCounters,
    budget: Option<&Semaphore>,
    timeout: Duration,
) -> Result<T> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    within(timeout, recv.read_exact(&mut prefix)).await?;
    let size = check_length(prefix, limit, protocol)?;
    let _permit = match budget {
        // `size` is within a frame cap, far below u32::MAX and the budget (checked in config).
        Some(b) => Some(
            b.acquire_many(u32::try_from(size).unwrap_or(u32::MAX))
                .await
                .map_err(io)?,
        ),
        None => None,
    };
    // quinn collects what arrives (never more than `size`), so memory follows bytes received.
    let payload = within(timeout, recv.read_to_end(size)).await?;
    if payload.len() != size {
        return Err(Error::Decode {
            protocol,
            reason: format!(
                "frame announced {size} bytes, stream ended after {}",
                payload.len()
            ),
        });
    }
    counters
        .bytes_received
        .fetch_add((LENGTH_PREFIX + size) as u64, Ordering::Relaxed);
    decode_payload(&payload, protocol)
}
