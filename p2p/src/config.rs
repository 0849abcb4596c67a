//! The endpoint's parameters ([`EndpointConfig`]): a serde section of the node's config, with a
//! `DEFAULT_*` constant per field, and the QUIC transport parameters derived from it.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, sync::Arc, time::Duration};

/// Default of [`EndpointConfig::listen`]: loopback, any free port (what tests want; the node
/// always sets its own `p2p_listen`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));
/// Default of [`EndpointConfig::queue_capacity`]: notifications queued per peer.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
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
    /// Notifications queued per peer before the oldest is dropped.
    /// Default: [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
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
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_backoff: DEFAULT_MAX_BACKOFF,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }
}

impl EndpointConfig {
    /// The QUIC transport parameters: keep-alives, so a dead peer's connection is closed after
    /// `idle_timeout` rather than quinn's default of tens of seconds.
    pub(crate) fn transport(&self) -> Result<Arc<quinn::TransportConfig>> {
        let tls = |reason: String| Error::Tls { reason };
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return Err(tls(format!(
                "p2p.keep_alive_ms ({} ms) must be positive and below p2p.idle_timeout_ms ({} ms)",
                self.keep_alive.as_millis(),
                self.idle_timeout.as_millis()
            )));
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| tls(format!("p2p.idle_timeout_ms: {e}")))?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(idle));
        transport.keep_alive_interval(Some(self.keep_alive));
        Ok(Arc::new(transport))
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
