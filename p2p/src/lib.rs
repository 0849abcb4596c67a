//! keel-p2p: Keel's network layer — QUIC (quinn) endpoints whose TLS identities are bound to the
//! committee's network keys, capped frames, notifications and request/response.
//!
//! ```text
//!  network key ──▶ NetworkIdentity (self-signed ed25519 cert) ──▶ rustls configs
//!                                  peer cert ──▶ PeerVerifier ──▶ AllowedPeers? ──▶ peer identity
//!  message ──encode_frame(cap)──▶ [lane tag | u32 len | bcs] ──read_frame(lane cap)──▶ message
//! ```
//!
//! Committed-range sync's protocol logic is the pure state machine [`range_sync::RangeSync`]
//! (what a client accepts as proven committed, and how it schedules ranges over peers), and
//! checkpoint state sync's is [`state_sync::StateSync`] (buckets proven against a certified
//! root, downloaded from several peers); the node runs them.
//!
//! Main types: [`Network`] (a running endpoint), [`PeerAddress`] (where a peer is dialled: an
//! IP address, or a host name looked up at each dial), [`EndpointConfig`] (its parameters, a serde
//! section with `DEFAULT_*` constants; the listen address is set by the node, not the section),
//! [`NetworkIdentity`]/[`AllowedPeers`] (who we are, whom we accept), [`Protocol`] and its
//! messages.
//!
//! Invariants:
//! - A peer is accepted only if its certificate's ed25519 key is in the allowed set, on both
//!   sides of the handshake, and only over TLS 1.3.
//! - Every frame is capped per protocol before it is read; bad bytes are a typed error.
//! - Everything a peer can make this node hold is bounded per peer: one connection per key,
//!   its open streams and requests, unread and being-read bytes, queued outbound frames (in
//!   frames and bytes, per lane), and the time a frame may take (see [`endpoint`]).
//! - Consensus messages have their own lane (queue, streams, budget): batches can neither delay
//!   nor evict them.
//!
//! Not here: verification of message contents (signatures, QCs), which consumers do against
//! the committee (except committed ranges, which [`range_sync`] checks); consensus logic;
//! persistence.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod identity;
pub mod protocol;
pub mod range_sync;
pub mod state_sync;

pub use address::PeerAddress;
#[cfg(feature = "test-utils")]
pub use endpoint::dial_raw;
pub use endpoint::{
    DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_INBOUND_BYTES, DEFAULT_KEEP_ALIVE,
    DEFAULT_LISTEN, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_STREAMS,
    DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_CAPACITY, DEFAULT_RECEIVE_WINDOW, DEFAULT_REQUEST_TIMEOUT,
    EndpointConfig, Handler, Network, NetworkCounters,
};
pub use error::{Error, Result};
pub use frame::{FrameDecoder, decode_payload, encode_frame};
pub use identity::{
    AllowedPeers, NetworkIdentity, PeerVerifier, client_config, peer_key, server_config,
};
pub use protocol::{Notification, Protocol, Request, Response};
