//! The QUIC endpoint: connections to allowed peers, one-way notifications, request/response.
//!
//! - One connection per pair: the peer with the smaller network key dials, the other accepts;
//!   a newer connection from a key replaces the older one. Dials that fail are retried with
//!   capped exponential back-off; a dial answered by another key than the one dialled is
//!   closed, so a connection is always recorded under the key its handshake proved.
//! - Each notification travels on its own unidirectional stream, tagged with its lane
//!   (consensus or batches), each request on its own bidirectional stream; a stream carries
//!   one capped frame, so a bad frame costs one stream.
//! - Every resource a peer can grow is bounded per peer: outbound queues per lane in frames
//!   and bytes ([`outbound`]); inbound streams, requests, unread bytes, bytes being read per
//!   lane, frame sizes per protocol and the time a frame may take ([`inbound`]).

mod inbound;
mod outbound;

pub use crate::config::{
    DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_INBOUND_BYTES, DEFAULT_KEEP_ALIVE,
    DEFAULT_LISTEN, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_STREAMS,
    DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_CAPACITY, DEFAULT_RECEIVE_WINDOW, DEFAULT_REQUEST_TIMEOUT,
    EndpointConfig,
};
use crate::{
    address::PeerAddress,
    error::{Error, Result},
    frame::{encode_frame, encode_frame_after},
    identity::{AllowedPeers, NetworkIdentity, client_config, peer_key, server_config},
    protocol::{Notification, Protocol, Request, Response},
};
use keel_types::PublicKey;
use outbound::Peer;
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

const ALPN: &[u8] = b"keel/1";

/// What the node does with what arrives. Notifications are delivered on the endpoint's tasks
/// (one per stream, so in no fixed order): implementations hand work to bounded channels and
/// return at once. Requests are answered on the blocking pool.
pub trait Handler<C>: Send + Sync + 'static {
    /// A notification from an authenticated peer.
    fn on_notification(&self, from: PublicKey, message: Notification<C>);
    /// A request from an authenticated peer; the answer is sent back.
    fn on_request(&self, from: PublicKey, request: Request) -> Response;
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct NetworkCounters {
    /// Notifications dropped because a peer's lane was full (in frames or bytes) or its
    /// connection was lost while sending.
    pub dropped: AtomicU64,
    /// Frames refused (over the cap, undecodable, on the wrong lane, or stalled).
    pub bad_frames: AtomicU64,
    /// Of `bad_frames`, those whose bytes did not arrive within the frame timeout.
    pub stalled_frames: AtomicU64,
    /// Connections closed because the same key connected again.
    pub replaced_connections: AtomicU64,
    /// Notifications delivered to the handler.
    pub received: AtomicU64,
    /// Frame bytes written to peers (notifications, requests and responses).
    pub bytes_sent: AtomicU64,
    /// Frame bytes read from peers.
    pub bytes_received: AtomicU64,
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
    peers: Mutex<HashMap<PublicKey, Arc<Peer>>>,
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

    /// The registered connection to `key`, if it is still open.
    fn live_connection(&self, key: &PublicKey) -> Option<quinn::Connection> {
        self.connections
            .lock()
            .get(key)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    fn peer_list(&self) -> Vec<Arc<Peer>> {
        self.peers.lock().values().cloned().collect()
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
            peers: Mutex::new(HashMap::new()),
            handler,
            config,
            counters: NetworkCounters::default(),
            shutdown: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(inbound::accept_loop(inner.clone()));
        Ok(Network { inner })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.endpoint.local_addr().map_err(|e| Error::Tls {
            reason: e.to_string(),
        })
    }

    /// Adds a peer to send to; dials it (looking its host name up at each dial) if this node
    /// has the smaller key. A peer already added stays as it is.
    pub fn add_peer(&self, key: PublicKey, address: impl Into<PeerAddress>) {
        let peer = Arc::new(Peer::new(address.into()));
        {
            let mut peers = self.inner.peers.lock();
            if peers.contains_key(&key) {
                return;
            }
            peers.insert(key, peer.clone());
        }
        outbound::spawn_senders(&self.inner, key, &peer);
    }

    /// Stops sending to `key` (its queued messages are dropped) and closes its connection.
    pub fn remove_peer(&self, key: &PublicKey) {
        if let Some(peer) = self.inner.peers.lock().remove(key) {
            peer.remove();
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
        for peer in self.inner.peer_list() {
            peer.wake();
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

    /// Queues `message` for `peer` on its lane (drop-oldest when the lane is full).
    pub fn send(&self, peer: &PublicKey, message: &Notification<C>) -> Result<()> {
        let (lane, frame) = encode_notification(message)?;
        self.enqueue(peer, lane, frame);
        Ok(())
    }

    /// Queues `message` for every peer.
    pub fn broadcast(&self, message: &Notification<C>) -> Result<()> {
        let (lane, frame) = encode_notification(message)?;
        let peers: Vec<PublicKey> = self.inner.peers.lock().keys().copied().collect();
        for p in peers {
            self.enqueue(&p, lane, frame.clone());
        }
        Ok(())
    }

    /// Queues raw bytes as if they were a frame on `lane` (tests of the receiver's checks):
    /// the stream opens with `lane`'s tag, then `bytes`.
    #[cfg(feature = "test-utils")]
    pub fn send_raw_frame(&self, peer: &PublicKey, lane: Protocol, bytes: Vec<u8>) {
        let mut frame = vec![lane.tag()];
        frame.extend_from_slice(&bytes);
        self.enqueue(peer, lane, frame);
    }

    fn enqueue(&self, peer: &PublicKey, lane: Protocol, frame: Vec<u8>) {
        let Some(peer) = self.inner.peers.lock().get(peer).cloned() else {
            return;
        };
        let config = &self.inner.config;
        let dropped = peer.enqueue(lane, frame, config.queue_capacity, config.queue_bytes);
        if dropped > 0 {
            self.inner
                .counters
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Frame bytes queued for every peer (bounded by peers × lanes × `queue_bytes`).
    pub fn queued_bytes(&self) -> usize {
        self.inner
            .peer_list()
            .iter()
            .map(|p| p.queued_bytes())
            .sum()
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
        let frame = encode_frame(request, crate::protocol::MAX_REQUEST_BYTES, "sync request")?;
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(io)?;
            send.write_all(&frame).await.map_err(io)?;
            send.finish().map_err(io)?;
            self.inner
                .counters
                .bytes_sent
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            let counters = &self.inner.counters;
            let timeout = self.inner.config.request_timeout;
            inbound::read_frame::<Response>(&mut recv, limit, "sync", counters, None, timeout).await
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
        for peer in self.inner.peer_list() {
            peer.wake();
        }
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        self.inner.endpoint.wait_idle().await;
    }
}

/// Dials `address` as `identity` over a fresh client endpoint with this crate's TLS and
/// transport settings, and returns the raw connection: tests build misbehaving peers on it
/// (streams that stall, too many streams, a second connection from the same key).
#[cfg(feature = "test-utils")]
pub async fn dial_raw(
    identity: &NetworkIdentity,
    allowed: Arc<AllowedPeers>,
    address: SocketAddr,
) -> Result<quinn::Connection> {
    let config = EndpointConfig::default();
    let transport = config.transport()?;
    let (_, client) = quic_configs(identity, &allowed, &transport)?;
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(io)?;
    endpoint.set_default_client_config(client);
    endpoint
        .connect(address, "keel")
        .map_err(io)?
        .await
        .map_err(io)
}

/// Encodes a notification under its lane's cap, behind the lane's tag.
fn encode_notification<C: Serialize>(message: &Notification<C>) -> Result<(Protocol, Vec<u8>)> {
    let lane = message.protocol();
    let frame = encode_frame_after(&[lane.tag()], message, lane.frame_limit(), lane.name())?;
    Ok((lane, frame))
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Tls {
        reason: e.to_string(),
    }
}

fn remote_key(connection: &quinn::Connection) -> Option<PublicKey> {
    let certs = connection
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    peer_key(certs.first()?).ok()
}
