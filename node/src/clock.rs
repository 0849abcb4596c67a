//! Wall-clock time for the protocol libraries, which read no clock themselves.

use keel_types::TimestampMs;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> TimestampMs {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    TimestampMs(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
