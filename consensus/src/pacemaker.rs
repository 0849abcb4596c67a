//! The pacemaker: the current round and how long to wait in it.
//!
//! Rules:
//! - A replica enters round `r + 1` on a QC or a TC for round `r`; rounds never go back.
//! - Entering on a QC means the protocol progressed: the back-off resets.
//! - Entering on a TC means a round failed: once more consecutive rounds have failed than
//!   crashed leaders explain (`grace`), each further failure doubles the wait, up to a cap, so
//!   rounds eventually last long enough for a quorum to hear the leader after the network
//!   stabilises. With f faulty validators up to 2f consecutive rounds can fail in a healthy
//!   network (a faulty leader's round and the round before it, whose votes it should collect),
//!   so the core sets `grace = 2f`; backing off for those would only slow the honest rounds.

use keel_types::Round;
use serde::{Deserialize, Serialize};

/// Default of [`PacemakerConfig::base_timeout_ms`]: a round lasts 1 s after progress.
pub const DEFAULT_BASE_TIMEOUT_MS: u64 = 1_000;
/// Default of [`PacemakerConfig::max_backoff_exponent`]: failing rounds double the wait up to
/// 6 times (64 s with the default base).
pub const DEFAULT_MAX_BACKOFF_EXPONENT: u32 = 6;

/// Round-timer parameters (loadable from a config file: every field defaults to its
/// `DEFAULT_*` constant, unknown fields are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacemakerConfig {
    /// Wait in a round after progress, in milliseconds.
    pub base_timeout_ms: u64,
    /// Most doublings applied while rounds keep failing.
    pub max_backoff_exponent: u32,
}

impl Default for PacemakerConfig {
    fn default() -> Self {
        PacemakerConfig {
            base_timeout_ms: DEFAULT_BASE_TIMEOUT_MS,
            max_backoff_exponent: DEFAULT_MAX_BACKOFF_EXPONENT,
        }
    }
}

/// Tracks the current round and the consecutive failed rounds.
#[derive(Debug, Clone)]
pub struct Pacemaker {
    round: Round,
    failures: u32,
    grace: u32,
    config: PacemakerConfig,
}

impl Pacemaker {
    /// A pacemaker in `round` that backs off after more than `grace` consecutive failures.
    pub fn new(round: Round, config: PacemakerConfig, grace: u32) -> Self {
        Pacemaker {
            round,
            failures: 0,
            grace,
            config,
        }
    }

    /// The current round.
    pub fn round(&self) -> Round {
        self.round
    }

    /// Consecutive rounds that ended in a timeout.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long to wait in the current round before timing out.
    pub fn timeout_ms(&self) -> u64 {
        let exp = self
            .failures
            .saturating_sub(self.grace)
            .min(self.config.max_backoff_exponent);
        self.config.base_timeout_ms.saturating_mul(1u64 << exp)
    }

    /// Enters the round after a QC's round; returns the new round if it advanced.
    pub fn on_qc(&mut self, qc_round: Round) -> Option<Round> {
        let next = qc_round.checked_next()?;
        if next <= self.round {
            return None;
        }
        self.round = next;
        self.failures = 0;
        Some(next)
    }

    /// Enters the round after a TC's round; returns the new round if it advanced.
    pub fn on_tc(&mut self, tc_round: Round) -> Option<Round> {
        let next = tc_round.checked_next()?;
        if next <= self.round {
            return None;
        }
        self.round = next;
        self.failures = self.failures.saturating_add(1);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_timeouts_and_resets_on_progress() {
        let mut p = Pacemaker::new(
            Round(1),
            PacemakerConfig {
                base_timeout_ms: 100,
                max_backoff_exponent: 3,
            },
            0,
        );
        assert_eq!(p.timeout_ms(), 100);
        assert_eq!(p.on_tc(Round(1)), Some(Round(2)));
        assert_eq!(p.timeout_ms(), 200);
        for r in 2..10 {
            p.on_tc(Round(r));
        }
        assert_eq!(p.timeout_ms(), 800, "capped at 2^3");
        assert_eq!(p.on_qc(Round(10)), Some(Round(11)));
        assert_eq!(p.timeout_ms(), 100);
        // Old certificates never move the round back.
        assert_eq!(p.on_qc(Round(3)), None);
        assert_eq!(p.on_tc(Round(4)), None);
        assert_eq!(p.round(), Round(11));
    }

    #[test]
    fn grace_delays_the_back_off() {
        let mut p = Pacemaker::new(
            Round(1),
            PacemakerConfig {
                base_timeout_ms: 100,
                max_backoff_exponent: 5,
            },
            2,
        );
        p.on_tc(Round(1));
        p.on_tc(Round(2));
        assert_eq!(p.timeout_ms(), 100);
        p.on_tc(Round(3));
        assert_eq!(p.timeout_ms(), 200);
    }
}
