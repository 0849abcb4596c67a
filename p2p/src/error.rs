//! The error type of keel-p2p.

/// Errors from framing, identities and peer authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A frame over its protocol's cap (refused before reading or allocating it).
    #[error("{protocol} frame of {size} bytes is over the limit of {limit} bytes")]
    FrameTooLarge {
        /// The protocol whose cap applies.
        protocol: &'static str,
        /// The announced or actual size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// Bytes that do not decode as the protocol's message type.
    #[error("cannot decode {protocol} frame: {reason}")]
    Decode {
        /// The protocol.
        protocol: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// A peer that announced a frame (or opened a stream) and did not send its bytes in time.
    #[error("no frame bytes for {waited_ms} ms: stream dropped")]
    Stalled {
        /// How long the read waited.
        waited_ms: u64,
    },
    /// A certificate whose key is not an allowed peer.
    #[error("peer key {key} is not in the allowed set")]
    UnknownPeer {
        /// The key, hex.
        key: String,
    },
    /// A certificate that is not a single self-signed ed25519 certificate.
    #[error("bad peer certificate: {reason}")]
    Certificate {
        /// What is wrong.
        reason: String,
    },
    /// An endpoint parameter out of range (the message names the `p2p.*` field).
    #[error("{reason}")]
    Config {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// Building the TLS configuration failed (our own setup, not a peer's fault).
    #[error("tls setup: {reason}")]
    Tls {
        /// What failed.
        reason: String,
    },
}

/// Result with keel-p2p's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
