//! The QUIC endpoint: connections to allowed peers, one-way notifications, request/response.
//!
//! - One connection per pair: the peer with the smaller network key dials, the other accepts,
//!   so simultaneous dials cannot happen. Dials that fail are retried with capped exponential
//!   back-off.
//! - Each notification travels on its own unidirectional stream, each request on its own
//!   bidirectional stream; a stream carries one capped frame, so a bad frame costs one stream.
//! - Outbound notifications wait in a bounded queue per peer. When it is full the *oldest*
//!   message is dropped (and counted): for consensus and batch gossip the newest message
//!   supersedes older ones, and a slow or dead peer must not hold memory or block the others.

pub use crate::config::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_LISTEN, DEFAULT_MAX_BACKOFF,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_REQUEST_TIMEOUT, EndpointConfig,
};
use crate::{
    error::{Error, Result},
    frame::{LENGTH_PREFIX, check_length, decode_payload, encode_frame},
    identity::{AllowedPeers, NetworkIdentity, client_config, peer_key, server_config},
    protocol::{Notification, Protocol, Request, Response},
};
use keel_types::PublicKey;
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::Notify;

const ALPN: &[u8] = b"keel/1";

/// What the node does with what arrives. Called on the endpoint's tasks: implementations hand
/// work to bounded channels or blocking pools and return at once; a handler that blocks stalls
/// its connection's streams (only that peer's, not the others').
pub trait Handler<C>: Send + Sync + 'static {
    /// A notification from an authenticated peer.
    fn on_notification(&self, from: PublicKey, message: Notification<C>);
    /// A request from an authenticated peer; the answer is sent back.
    fn on_request(&self, from: PublicKey, request: Request) -> Response;
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct NetworkCounters {
    /// Notifications dropped because a peer's queue was full.
    pub dropped: AtomicU64,
    /// Frames refused (over the cap or undecodable).
    pub bad_frames: AtomicU64,
    /// Notifications delivered to the handler.
    pub received: AtomicU64,
    /// Frame bytes written to peers (notifications, requests and responses).
    pub bytes_sent: AtomicU64,
    /// Frame bytes read from peers.
    pub bytes_received: AtomicU64,
}

struct PeerQueue {
    messages: Mutex<VecDeque<Vec<u8>>>,
    ready: Notify,
    /// Set when the peer is removed: its sender task stops.
    removed: std::sync::atomic::AtomicBool,
}

struct Inner<C> {
    endpoint: quinn::Endpoint,
    /// This node's network key (replaced by [`Network::set_identity`]).
    me: Mutex<PublicKey>,
    /// How this node dials (presents `me`).
    client: Mutex<quinn::ClientConfig>,
    /// Bumped by every identity change (under the connections lock): a connection whose
    /// handshake started under an older identity is closed instead of registered.
    generation: AtomicU64,
    transport: Arc<quinn::TransportConfig>,
    allowed: Arc<AllowedPeers>,
    connections: Mutex<HashMap<PublicKey, quinn::Connection>>,
    queues: Mutex<HashMap<PublicKey, Arc<PeerQueue>>>,
    handler: Arc<dyn Handler<C>>,
    config: EndpointConfig,
    counters: NetworkCounters,
    shutdown: std::sync::atomic::AtomicBool,
}

/// The server and client configurations presenting `identity` and accepting `allowed` peers.
fn quic_configs(
    identity: &NetworkIdentity,
    allowed: &Arc<AllowedPeers>,
    transport: &Arc<quinn::TransportConfig>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let tls = |e: String| Error::Tls { reason: e };
    let mut server = server_config(identity, allowed.clone())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = client_config(identity, allowed.clone())?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let server = QuicServerConfig::try_from(server).map_err(|e| tls(e.to_string()))?;
    let client = QuicClientConfig::try_from(client).map_err(|e| tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport.clone());
    Ok((server, client))
}

impl<C> Inner<C> {
    fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// A running endpoint.
pub struct Network<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for Network<C> {
    fn clone(&self) -> Self {
        Network {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Serialize + DeserializeOwned + Send + Sync + 'static> Network<C> {
    /// Binds the endpoint and starts accepting connections from allowed peers.
    pub fn start(
        config: EndpointConfig,
        identity: &NetworkIdentity,
        allowed: Arc<AllowedPeers>,
        handler: Arc<dyn Handler<C>>,
    ) -> Result<Self> {
        let transport = config.transport()?;
        let (server, client) = quic_configs(identity, &allowed, &transport)?;
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|e| Error::Tls {
            reason: format!("cannot bind {}: {e}", config.listen),
        })?;
        let inner = Arc::new(Inner {
            endpoint,
            me: Mutex::new(identity.public()),
            client: Mutex::new(client),
            generation: AtomicU64::new(0),
            transport,
            allowed,
            connections: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            handler,
            config,
            counters: NetworkCounters::default(),
            shutdown: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(accept_loop(inner.clone()));
        Ok(Network { inner })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.endpoint.local_addr().map_err(|e| Error::Tls {
            reason: e.to_string(),
        })
    }

    /// Adds a peer to send to; dials it if this node has the smaller key. A peer already
    /// added stays as it is.
    pub fn add_peer(&self, key: PublicKey, address: SocketAddr) {
        let queue = Arc::new(PeerQueue {
            messages: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            removed: std::sync::atomic::AtomicBool::new(false),
        });
        {
            let mut queues = self.inner.queues.lock();
            if queues.contains_key(&key) {
                return;
            }
            queues.insert(key, queue.clone());
        }
        tokio::spawn(peer_sender(self.inner.clone(), key, address, queue));
    }

    /// Stops sending to `key` (its queued messages are dropped) and closes its connection.
    pub fn remove_peer(&self, key: &PublicKey) {
        if let Some(queue) = self.inner.queues.lock().remove(key) {
            queue.removed.store(true, Ordering::Release);
            queue.ready.notify_one();
        }
        if let Some(connection) = self.inner.connections.lock().remove(key) {
            connection.close(0u32.into(), b"not a peer");
        }
    }

    /// This node's network key.
    pub fn identity(&self) -> PublicKey {
        *self.inner.me.lock()
    }

    /// Presents `identity` from now on (a validator's network key rotated at an epoch
    /// change): new handshakes use it, and every open connection, authenticated under the
    /// old key, is closed so that peers reconnect to the new one. Queued messages stay queued.
    pub fn set_identity(&self, identity: &NetworkIdentity) -> Result<()> {
        let (server, client) = quic_configs(identity, &self.inner.allowed, &self.inner.transport)?;
        self.inner.endpoint.set_server_config(Some(server));
        *self.inner.client.lock() = client;
        *self.inner.me.lock() = identity.public();
        let closed: Vec<quinn::Connection> = {
            let mut connections = self.inner.connections.lock();
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
            connections.drain().map(|(_, c)| c).collect()
        };
        for connection in closed {
            connection.close(0u32.into(), b"identity changed");
        }
        for queue in self.inner.queues.lock().values() {
            queue.ready.notify_one();
        }
        Ok(())
    }

    /// Replaces the keys allowed to connect and closes connections of keys no longer allowed
    /// (e.g. at an epoch change).
    pub fn set_allowed(&self, keys: impl IntoIterator<Item = PublicKey>) {
        self.inner.allowed.replace(keys);
        let mut connections = self.inner.connections.lock();
        let gone: Vec<PublicKey> = connections
            .keys()
            .filter(|k| !self.inner.allowed.contains(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(connection) = connections.remove(&key) {
                connection.close(0u32.into(), b"not allowed");
            }
        }
    }

    /// Queues `message` for `peer` (drop-oldest when the queue is full).
    pub fn send(&self, peer: &PublicKey, message: &Notification<C>) -> Result<()> {
        let frame = encode_notification(message)?;
        self.enqueue(peer, frame);
        Ok(())
    }

    /// Queues `message` for every peer.
    pub fn broadcast(&self, message: &Notification<C>) -> Result<()> {
        let frame = encode_notification(message)?;
        let peers: Vec<PublicKey> = self.inner.queues.lock().keys().copied().collect();
        for p in peers {
            self.enqueue(&p, frame.clone());
        }
        Ok(())
    }

    /// Queues raw bytes as if they were a frame (tests of the receiver's frame checks).
    #[cfg(feature = "test-utils")]
    pub fn send_raw_frame(&self, peer: &PublicKey, bytes: Vec<u8>) {
        self.enqueue(peer, bytes);
    }

    fn enqueue(&self, peer: &PublicKey, frame: Vec<u8>) {
        let Some(queue) = self.inner.queues.lock().get(peer).cloned() else {
            return;
        };
        let mut messages = queue.messages.lock();
        if messages.len() >= self.inner.config.queue_capacity {
            messages.pop_front();
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        messages.push_back(frame);
        drop(messages);
        queue.ready.notify_one();
    }

    /// Sends `request` to `peer` and waits for its response (bounded by the request timeout).
    pub async fn request(&self, peer: &PublicKey, request: &Request) -> Result<Response> {
        let connection = self
            .inner
            .connections
            .lock()
            .get(peer)
            .cloned()
            .ok_or_else(|| Error::Tls {
                reason: format!("not connected to {peer}"),
            })?;
        let limit = Protocol::Sync.frame_limit();
        let frame = encode_frame(request, limit, "sync")?;
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(io)?;
            send.write_all(&frame).await.map_err(io)?;
            send.finish().map_err(io)?;
            self.inner
                .counters
                .bytes_sent
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            read_frame::<Response>(&mut recv, limit, "sync", &self.inner.counters).await
        };
        tokio::time::timeout(self.inner.config.request_timeout, exchange)
            .await
            .map_err(|_| Error::Tls {
                reason: format!("request to {peer} timed out"),
            })?
    }

    /// Peers with a live connection.
    pub fn connected_peers(&self) -> Vec<PublicKey> {
        self.inner
            .connections
            .lock()
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Counters.
    pub fn counters(&self) -> &NetworkCounters {
        &self.inner.counters
    }

    /// Closes every connection, stops the endpoint's tasks and waits until the socket is idle.
    pub async fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        let queues: Vec<Arc<PeerQueue>> = self.inner.queues.lock().values().cloned().collect();
        for q in queues {
            q.ready.notify_one();
        }
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        self.inner.endpoint.wait_idle().await;
    }
}

/// Encodes a notification under its own protocol's cap (batches are larger than consensus
/// messages).
fn encode_notification<C: Serialize>(message: &Notification<C>) -> Result<Vec<u8>> {
    let protocol = match message {
        Notification::Consensus(_) | Notification::CheckpointSignature(_) => Protocol::Consensus,
        Notification::Batch(_) | Notification::BatchAck(_) | Notification::Proof(_) => {
            Protocol::Batches
        }
    };
    encode_frame(message, protocol.frame_limit(), protocol.name())
}

/// The receive cap of notification streams: the largest of the notification protocols' caps
/// (the kind is only known after decoding).
const NOTIFICATION_LIMIT: usize = Protocol::Batches.frame_limit();

fn io(e: impl std::fmt::Display) -> Error {
    Error::Tls {
        reason: e.to_string(),
    }
}

async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: usize,
    protocol: &'static str,
    counters: &NetworkCounters,
) -> Result<T> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    recv.read_exact(&mut prefix).await.map_err(io)?;
    let size = check_length(prefix, limit, protocol)?;
    let mut payload = vec![0u8; size];
    recv.read_exact(&mut payload).await.map_err(io)?;
    counters
        .bytes_received
        .fetch_add((LENGTH_PREFIX + size) as u64, Ordering::Relaxed);
    decode_payload(&payload, protocol)
}

fn remote_key(connection: &quinn::Connection) -> Option<PublicKey> {
    let certs = connection
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    peer_key(certs.first()?).ok()
}

async fn accept_loop<C: DeserializeOwned + Send + Sync + 'static>(inner: Arc<Inner<C>>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        let generation = inner.generation.load(Ordering::Acquire);
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return; // handshake refused (not an allowed peer) or failed
            };
            if let Some(key) = remote_key(&connection) {
                serve(inner, key, connection, generation).await;
            }
        });
    }
}

/// Registers a connection and serves its incoming streams until it closes.
async fn serve<C: DeserializeOwned + Send + Sync + 'static>(
    inner: Arc<Inner<C>>,
    key: PublicKey,
    connection: quinn::Connection,
    generation: u64,
) {
    if !inner.allowed.contains(&key) {
        // Allowed at the handshake, removed since (an epoch change in between).
        connection.close(0u32.into(), b"not allowed");
        return;
    }
    {
        let mut connections = inner.connections.lock();
        if inner.generation.load(Ordering::Acquire) != generation {
            // The handshake ran under the identity this node presented before a rotation.
            connection.close(0u32.into(), b"identity changed");
            return;
        }
        connections.insert(key, connection.clone());
    }
    if let Some(q) = inner.queues.lock().get(&key) {
        q.ready.notify_one();
    }
    let requests = {
        let inner = inner.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let limit = Protocol::Sync.frame_limit();
                    match read_frame::<Request>(&mut recv, limit, "sync", &inner.counters).await {
                        Ok(request) => {
                            // Answers read storage: off the async workers.
                            let serving = inner.clone();
                            let Ok(response) = tokio::task::spawn_blocking(move || {
                                serving.handler.on_request(key, request)
                            })
                            .await
                            else {
                                return;
                            };
                            if let Ok(frame) = encode_frame(&response, limit, "sync") {
                                inner
                                    .counters
                                    .bytes_sent
                                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                                let _ = send.write_all(&frame).await;
                                let _ = send.finish();
                            }
                        }
                        Err(_) => {
                            inner.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    };
    while let Ok(mut recv) = connection.accept_uni().await {
        let limit = NOTIFICATION_LIMIT;
        match read_frame::<Notification<C>>(&mut recv, limit, "notification", &inner.counters).await
        {
            Ok(message) => {
                inner.counters.received.fetch_add(1, Ordering::Relaxed);
                inner.handler.on_notification(key, message);
            }
            Err(e) => {
                inner.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %key, error = %e, "bad frame");
                let _ = recv.stop(1u32.into());
            }
        }
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

/// Keeps one peer connected (dialing if this node has the smaller key) and drains its queue.
async fn peer_sender<C: DeserializeOwned + Send + Sync + 'static>(
    inner: Arc<Inner<C>>,
    key: PublicKey,
    address: SocketAddr,
    queue: Arc<PeerQueue>,
) {
    let mut backoff = Duration::from_millis(50);
    while !inner.is_shut_down() && !queue.removed.load(Ordering::Acquire) {
        // Read each time: the identity may change (key rotation).
        let dialer = *inner.me.lock() < key;
        let (client, generation) = {
            let client = inner.client.lock();
            (client.clone(), inner.generation.load(Ordering::Acquire))
        };
        if !inner.allowed.contains(&key) {
            tokio::time::sleep(backoff).await;
            continue;
        }
        let existing = inner
            .connections
            .lock()
            .get(&key)
            .filter(|c| c.close_reason().is_none())
            .cloned();
        let connection = match existing {
            Some(c) => c,
            None if dialer => {
                match inner.endpoint.connect_with(client, address, "keel") {
                    Ok(connecting) => match connecting.await {
                        // The handshake proved an allowed key: it must be the one dialled.
                        Ok(c) if remote_key(&c) != Some(key) => {
                            c.close(0u32.into(), b"not the key dialled");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(inner.config.max_backoff);
                            continue;
                        }
                        Ok(c) => {
                            backoff = Duration::from_millis(50);
                            tokio::spawn(serve(inner.clone(), key, c.clone(), generation));
                            c
                        }
                        Err(_) => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(inner.config.max_backoff);
                            continue;
                        }
                    },
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
            None => {
                // The peer dials us; wait until it has (or a message arrives).
                let _ = tokio::time::timeout(backoff, queue.ready.notified()).await;
                continue;
            }
        };
        let next = queue.messages.lock().pop_front();
        match next {
            Some(frame) => {
                let sent = async {
                    let mut send = connection.open_uni().await.map_err(io)?;
                    send.write_all(&frame).await.map_err(io)?;
                    send.finish().map_err(io)
                };
                if sent.await.is_err() {
                    // Connection lost: the message is dropped; the loop reconnects.
                    inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    inner
                        .counters
                        .bytes_sent
                        .fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
            }
            None => {
                tokio::select! {
                    _ = queue.ready.notified() => {}
                    _ = connection.closed() => {}
                }
            }
        }
    }
}
