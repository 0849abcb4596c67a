//! The endpoint's parameters ([`EndpointConfig`]): a serde section of the node's config, with a
//! `DEFAULT_*` constant per field, and the QUIC transport parameters derived from it.

use crate::{
    error::{Error, Result},
    frame::LENGTH_PREFIX,
    protocol::Protocol,
};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, sync::Arc, time::Duration};

/// Default of [`EndpointConfig::listen`]: loopback, any free port (what tests want; the node
/// always sets its own `p2p_listen`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));
/// Default of [`EndpointConfig::queue_capacity`]: notifications queued per peer and lane.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default of [`EndpointConfig::queue_bytes`]: frame bytes queued per peer and lane.
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;
/// Default of [`EndpointConfig::inbound_bytes`]: frame bytes read from one peer on one lane at
/// once.
pub const DEFAULT_INBOUND_BYTES: usize = 16 << 20;
/// Default of [`EndpointConfig::max_streams`]: notification streams a peer may have open at once.
pub const DEFAULT_MAX_STREAMS: u32 = 64;
/// Default of [`EndpointConfig::max_requests`]: requests a peer may have in flight at once.
pub const DEFAULT_MAX_REQUESTS: u32 = 8;
/// Default of [`EndpointConfig::receive_window`]: unread bytes a connection may hold.
pub const DEFAULT_RECEIVE_WINDOW: u32 = 16 << 20;
/// Default of [`EndpointConfig::frame_timeout`]: longest wait for a frame's bytes.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`EndpointConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`EndpointConfig::max_backoff`].
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Default of [`EndpointConfig::idle_timeout`]: a connection silent this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default of [`EndpointConfig::keep_alive`].
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_millis(750);

/// Endpoint parameters: a serde section (durations in milliseconds, under `*_ms` names) that
/// the node embeds in its config file. Every field has a default (the `DEFAULT_*` constants);
/// unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// UDP address to bind (port 0 picks one). Not part of the serde section: the node sets
    /// it from its own `p2p_listen`, which must match the address genesis lists for it.
    /// Default: [`DEFAULT_LISTEN`].
    #[serde(skip)]
    pub listen: SocketAddr,
    /// Notifications queued per peer and lane (consensus, batches) before the oldest is
    /// dropped. Default: [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Frame bytes queued per peer and lane before the oldest frames are dropped (a dead
    /// peer holds at most this much per lane). At least the lane's frame cap.
    /// Default: [`DEFAULT_QUEUE_BYTES`].
    pub queue_bytes: usize,
    /// Frame bytes being read from one peer on one lane at once: a frame waits for room
    /// before its payload is read, so one peer pins at most this much per lane. At least the
    /// largest notification frame. Default: [`DEFAULT_INBOUND_BYTES`].
    pub inbound_bytes: usize,
    /// Notification streams one peer may have open at once (QUIC's stream limit; more wait
    /// in the peer's own stack). Default: [`DEFAULT_MAX_STREAMS`].
    pub max_streams: u32,
    /// Requests one peer may have in flight at once, so one peer occupies at most this many
    /// of the node's request workers. Default: [`DEFAULT_MAX_REQUESTS`].
    pub max_requests: u32,
    /// Bytes a connection may have received and not yet read (QUIC's connection window).
    /// Default: [`DEFAULT_RECEIVE_WINDOW`].
    pub receive_window: u32,
    /// Longest wait for a frame's length prefix or payload once its stream is open
    /// (`frame_timeout_ms`): a peer that announces a frame and stalls loses the stream.
    /// Default: [`DEFAULT_FRAME_TIMEOUT`].
    #[serde(rename = "frame_timeout_ms", with = "millis")]
    pub frame_timeout: Duration,
    /// How long a request may take (`request_timeout_ms`). Default: [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// Longest wait between dial attempts (`max_backoff_ms`). Default: [`DEFAULT_MAX_BACKOFF`].
    #[serde(rename = "max_backoff_ms", with = "millis")]
    pub max_backoff: Duration,
    /// A connection that hears nothing (not even a keep-alive) for this long is closed and
    /// redialled (`idle_timeout_ms`): how soon a peer that crashed and restarted, whose old
    /// connection looks open, is reached again. Default: [`DEFAULT_IDLE_TIMEOUT`].
    #[serde(rename = "idle_timeout_ms", with = "millis")]
    pub idle_timeout: Duration,
    /// How often an otherwise quiet connection sends a keep-alive (`keep_alive_ms`; below
    /// `idle_timeout`). Default: [`DEFAULT_KEEP_ALIVE`].
    #[serde(rename = "keep_alive_ms", with = "millis")]
    pub keep_alive: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: DEFAULT_LISTEN,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            inbound_bytes: DEFAULT_INBOUND_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_requests: DEFAULT_MAX_REQUESTS,
            receive_window: DEFAULT_RECEIVE_WINDOW,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_backoff: DEFAULT_MAX_BACKOFF,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }
}

impl EndpointConfig {
    /// The QUIC transport parameters: keep-alives, so a dead peer's connection is closed after
    /// `idle_timeout` rather than quinn's default of tens of seconds, and the per-connection
    /// stream and window limits. Refuses bounds below what one frame needs.
    pub(crate) fn transport(&self) -> Result<Arc<quinn::TransportConfig>> {
        self.validate()?;
        let tls = |reason: String| Error::Tls { reason };
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| tls(format!("p2p.idle_timeout_ms: {e}")))?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(idle));
        transport.keep_alive_interval(Some(self.keep_alive));
        transport.max_concurrent_uni_streams(self.max_streams.into());
        transport.max_concurrent_bidi_streams(self.max_requests.into());
        transport.receive_window(self.receive_window.into());
        Ok(Arc::new(transport))
    }

    /// Checks every field's range; the error names the `p2p.*` field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::Config { reason };
        let largest = Protocol::Batches.frame_limit() + LENGTH_PREFIX + 1;
        for (field, value) in [
            ("queue_bytes", self.queue_bytes),
            ("inbound_bytes", self.inbound_bytes),
        ] {
            if value < largest {
                return Err(bad(format!(
                    "p2p.{field} ({value}) must be at least one batch frame ({largest} bytes)"
                )));
            }
        }
        for (field, value) in [
            ("queue_capacity", self.queue_capacity),
            ("max_streams", self.max_streams as usize),
            ("max_requests", self.max_requests as usize),
            ("receive_window", self.receive_window as usize),
        ] {
            if value == 0 {
                return Err(bad(format!("p2p.{field} must be positive")));
            }
        }
        if self.frame_timeout.is_zero() {
            return Err(bad("p2p.frame_timeout_ms must be positive".into()));
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return Err(bad(format!(
                "p2p.keep_alive_ms ({} ms) must be positive and below p2p.idle_timeout_ms ({} ms)",
                self.keep_alive.as_millis(),
                self.idle_timeout.as_millis()
            )));
        }
        Ok(())
    }
}

/// A [`Duration`] as a whole number of milliseconds (saturating at `u64::MAX`).
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{
        IntoDeserializer,
        value::{Error as DeError, MapDeserializer},
    };

    fn from_pairs<V: IntoDeserializer<'static, DeError>>(
        pairs: Vec<(&'static str, V)>,
    ) -> std::result::Result<EndpointConfig, DeError> {
        EndpointConfig::deserialize(MapDeserializer::new(pairs.into_iter()))
    }

    #[test]
    fn an_empty_section_is_the_default() {
        let config = from_pairs::<u64>(vec![]).unwrap();
        assert_eq!(config, EndpointConfig::default());
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(config.queue_capacity, 1024);
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.max_backoff, Duration::from_secs(5));
        assert_eq!(config.queue_bytes, 32 << 20);
        assert_eq!(config.frame_timeout, Duration::from_secs(10));
        config.transport().unwrap();
    }

    #[test]
    fn bounds_below_one_frame_are_refused_by_name() {
        let small = EndpointConfig {
            inbound_bytes: 1 << 20,
            ..EndpointConfig::default()
        };
        let err = small.transport().unwrap_err().to_string();
        assert!(err.contains("p2p.inbound_bytes (1048576)"), "{err}");
        let none = EndpointConfig {
            max_requests: 0,
            ..EndpointConfig::default()
        };
        let err = none.transport().unwrap_err().to_string();
        assert!(err.contains("p2p.max_requests must be positive"), "{err}");
    }

    #[test]
    fn durations_are_milliseconds() {
        let config =
            from_pairs(vec![("request_timeout_ms", 300_u64), ("max_backoff_ms", 7)]).unwrap();
        assert_eq!(config.request_timeout, Duration::from_millis(300));
        assert_eq!(config.max_backoff, Duration::from_millis(7));
        assert_eq!(config.queue_capacity, DEFAULT_QUEUE_CAPACITY);
    }

    #[test]
    fn listen_and_unknown_fields_are_refused() {
        // `listen` comes from the node's own `p2p_listen`, never from this section.
        for field in ["listen", "request_timeout", "queue_capacit"] {
            let err = from_pairs(vec![(field, 1_u64)]).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{field}: {err}");
        }
    }

    #[test]
    fn serialises_every_field_but_listen() {
        let config = EndpointConfig {
            listen: SocketAddr::from(([10, 0, 0, 1], 7100)),
            queue_capacity: 3,
            queue_bytes: 9 << 20,
            inbound_bytes: 8 << 20,
            max_streams: 5,
            max_requests: 2,
            receive_window: 1 << 20,
            frame_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_millis(1500),
            max_backoff: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(9),
            keep_alive: Duration::from_secs(4),
        };
        let bytes = bcs::to_bytes(&config).unwrap();
        let back: EndpointConfig = bcs::from_bytes(&bytes).unwrap();
        assert_eq!(
            back,
            EndpointConfig {
                listen: DEFAULT_LISTEN,
                ..config
            }
        );
    }
}
