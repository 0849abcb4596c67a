//! The pacemaker: the current round and how long to wait in it.
//!
//! Rules:
//! - A replica enters round `r + 1` on a QC or a TC for round `r`; rounds never go back.
//! - Entering on a QC means the protocol progressed: the back-off resets. A round left on a
//!   QC for it is a latency sample: the time from the last arming of its timer (entering it,
//!   or [`Pacemaker::mark_idle`]) to its QC, less the idle allowance if the round was marked
//!   idle (the leader's wait for payload is on purpose, not latency; a leader that waited less
//!   gives a smaller sample, which the floor absorbs). A round in which this replica timed
//!   out ([`Pacemaker::on_local_timeout`]) is no sample: a QC formed from the votes that come
//!   with timeouts ends a round that lasted the timer.
//! - **Adaptive base.** The base timeout is `latency_multiplier` times the 99th percentile of
//!   the last `latency_window` samples, within `[min_timeout_ms, base_timeout_ms]`; with no
//!   samples yet (a fresh or restarted replica) it is `base_timeout_ms`. So failed rounds cost
//!   a few round-trips, not a fixed second, while a committee whose rounds slow down (a far
//!   leader, a loaded machine) raises its timeouts before they fire spuriously.
//! - **Idle allowance.** A round marked idle waits `idle_allowance_ms` more (the longest a
//!   leader may wait for payload), so an idle leader's wait never times its round out.
//! - **Back-off.** Entering on a TC means a round failed: once more consecutive rounds have
//!   failed than crashed leaders explain (`grace`), each further failure doubles the wait, up
//!   to `max_backoff_exponent` doublings, so rounds eventually last long enough for a quorum to
//!   hear the leader after the network stabilises. With f faulty validators up to 2f
//!   consecutive rounds can fail in a healthy network (a faulty leader's round and the round
//!   before it, whose votes it should collect), so the core sets `grace = 2f`; backing off for
//!   those would only slow the honest rounds.
//!
//! The pacemaker reads no clock: the core passes the time of each input.

use keel_types::{Round, TimestampMs};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Default of [`PacemakerConfig::base_timeout_ms`]: a round lasts at most 1 s after
/// progress (before back-off), and exactly that until latency samples exist.
pub const DEFAULT_BASE_TIMEOUT_MS: u64 = 1_000;
/// Default of [`PacemakerConfig::min_timeout_ms`]: an adapted round timeout is at least 200 ms.
pub const DEFAULT_MIN_TIMEOUT_MS: u64 = 200;
/// Default of [`PacemakerConfig::latency_multiplier`]: three times the p99 round latency.
pub const DEFAULT_LATENCY_MULTIPLIER: u64 = 3;
/// Default of [`PacemakerConfig::latency_window`]: the last 100 successful rounds.
pub const DEFAULT_LATENCY_WINDOW: usize = 100;
/// Default of [`PacemakerConfig::max_backoff_exponent`]: failing rounds double the wait up to
/// 6 times (64 s with the default base).
pub const DEFAULT_MAX_BACKOFF_EXPONENT: u32 = 6;

/// Round-timer parameters (loadable from a config file: every field defaults to its
/// `DEFAULT_*` constant, unknown fields are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacemakerConfig {
    /// Longest base wait in a round, in milliseconds: the adapted timeout never exceeds it,
    /// and a replica without latency samples uses it. Equal to `min_timeout_ms`, the timeout
    /// is fixed.
    pub base_timeout_ms: u64,
    /// Shortest adapted base wait in a round, in milliseconds.
    pub min_timeout_ms: u64,
    /// The adapted base is this many times the p99 of recent round latencies.
    pub latency_multiplier: u64,
    /// How many recent successful rounds the p99 is taken over.
    pub latency_window: usize,
    /// Most doublings applied while rounds keep failing.
    pub max_backoff_exponent: u32,
}

impl Default for PacemakerConfig {
    fn default() -> Self {
        PacemakerConfig {
            base_timeout_ms: DEFAULT_BASE_TIMEOUT_MS,
            min_timeout_ms: DEFAULT_MIN_TIMEOUT_MS,
            latency_multiplier: DEFAULT_LATENCY_MULTIPLIER,
            latency_window: DEFAULT_LATENCY_WINDOW,
            max_backoff_exponent: DEFAULT_MAX_BACKOFF_EXPONENT,
        }
    }
}

impl PacemakerConfig {
    /// A fixed timeout of `ms` (no adaptation), with the default back-off.
    pub fn fixed(ms: u64) -> Self {
        PacemakerConfig {
            base_timeout_ms: ms,
            min_timeout_ms: ms,
            ..PacemakerConfig::default()
        }
    }
}

/// Tracks the current round, the consecutive failed rounds and recent round latencies.
#[derive(Debug, Clone)]
pub struct Pacemaker {
    round: Round,
    failures: u32,
    grace: u32,
    config: PacemakerConfig,
    idle_allowance_ms: u64,
    /// When the current round's timer was last armed (`None` until the first round change).
    armed_at: Option<TimestampMs>,
    /// Whether the current round was marked idle.
    idle: bool,
    /// Whether this replica timed out in the current round.
    timed_out: bool,
    samples: VecDeque<u64>,
    base_ms: u64,
}

impl Pacemaker {
    /// A pacemaker in `round` that backs off after more than `grace` consecutive failures and
    /// gives idle rounds `idle_allowance_ms` more.
    pub fn new(round: Round, config: PacemakerConfig, grace: u32, idle_allowance_ms: u64) -> Self {
        Pacemaker {
            round,
            failures: 0,
            grace,
            config,
            idle_allowance_ms,
            armed_at: None,
            idle: false,
            timed_out: false,
            samples: VecDeque::new(),
            base_ms: config.base_timeout_ms,
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

    /// The adapted base timeout (before back-off and idle allowance).
    pub fn base_timeout_ms(&self) -> u64 {
        self.base_ms
    }

    /// How long to wait in the current round before timing out.
    pub fn timeout_ms(&self) -> u64 {
        let exp = self
            .failures
            .saturating_sub(self.grace)
            .min(self.config.max_backoff_exponent)
            .min(32);
        let allowance = if self.idle { self.idle_allowance_ms } else { 0 };
        self.base_ms
            .saturating_mul(1u64 << exp)
            .saturating_add(allowance)
    }

    /// The current round may idle on purpose from `now` (a leader may wait for payload before
    /// the round can end): the timer, re-armed now, waits the idle allowance more, and the
    /// latency sample counts from now, less the allowance.
    pub fn mark_idle(&mut self, now: TimestampMs) {
        self.idle = true;
        self.armed_at = Some(now);
    }

    /// This replica timed out in the current round: if the round still ends on a QC (formed
    /// from the votes that come with the timeouts), its length was the timer's, not latency,
    /// so it is no sample.
    pub fn on_local_timeout(&mut self) {
        self.timed_out = true;
    }

    /// Enters the round after a QC's round at `now`; returns the new round if it advanced.
    pub fn on_qc(&mut self, qc_round: Round, now: TimestampMs) -> Option<Round> {
        let next = qc_round.checked_next()?;
        if next <= self.round {
            // A QC for the round this replica just left on a timeout certificate: that round
            // still certified its block (votes travel with the timeouts), so it is no failure
            // for the back-off. Without this, a TC that arrives before the QC of the same
            // round (the usual order: timeouts go out first) counted every round after a
            // dead leader as failed, and a few unlucky leader draws doubled the timeout into
            // seconds-long stalls of the whole committee.
            if next == self.round {
                self.failures = 0;
            }
            return None;
        }
        if qc_round == self.round
            && !self.timed_out
            && let Some(armed) = self.armed_at
        {
            let allowance = if self.idle { self.idle_allowance_ms } else { 0 };
            self.sample(now.0.saturating_sub(armed.0).saturating_sub(allowance));
        }
        self.enter(next, now);
        self.failures = 0;
        Some(next)
    }

    /// Enters the round after a TC's round at `now`; returns the new round if it advanced.
    pub fn on_tc(&mut self, tc_round: Round, now: TimestampMs) -> Option<Round> {
        let next = tc_round.checked_next()?;
        if next <= self.round {
            return None;
        }
        self.enter(next, now);
        self.failures = self.failures.saturating_add(1);
        Some(next)
    }

    fn enter(&mut self, round: Round, now: TimestampMs) {
        self.round = round;
        self.armed_at = Some(now);
        self.idle = false;
        self.timed_out = false;
    }

    fn sample(&mut self, latency_ms: u64) {
        let window = self.config.latency_window.max(1);
        while self.samples.len() >= window {
            self.samples.pop_front();
        }
        self.samples.push_back(latency_ms);
        let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        // The 99th percentile, nearest rank.
        let rank = (sorted.len() * 99).div_ceil(100).max(1);
        let p99 = sorted[rank - 1];
        let (min, max) = (
            self.config.min_timeout_ms.min(self.config.base_timeout_ms),
            self.config.base_timeout_ms,
        );
        self.base_ms = p99
            .saturating_mul(self.config.latency_multiplier)
            .clamp(min, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> TimestampMs {
        TimestampMs(ms)
    }

    #[test]
    fn backs_off_on_timeouts_and_resets_on_progress() {
        let mut p = Pacemaker::new(
            Round(1),
            PacemakerConfig {
                max_backoff_exponent: 3,
                ..PacemakerConfig::fixed(100)
            },
            0,
            0,
        );
        assert_eq!(p.timeout_ms(), 100);
        assert_eq!(p.on_tc(Round(1), at(0)), Some(Round(2)));
        assert_eq!(p.timeout_ms(), 200);
        for r in 2..10 {
            p.on_tc(Round(r), at(0));
        }
        assert_eq!(p.timeout_ms(), 800, "capped at 2^3");
        assert_eq!(p.on_qc(Round(10), at(0)), Some(Round(11)));
        assert_eq!(p.timeout_ms(), 100);
        // Old certificates never move the round back.
        assert_eq!(p.on_qc(Round(3), at(0)), None);
        assert_eq!(p.on_tc(Round(4), at(0)), None);
        assert_eq!(p.round(), Round(11));
    }

    #[test]
    fn a_round_left_on_a_tc_whose_block_was_certified_is_no_failure() {
        let mut p = Pacemaker::new(
            Round(1),
            PacemakerConfig {
                max_backoff_exponent: 5,
                ..PacemakerConfig::fixed(100)
            },
            0,
            0,
        );
        // The TC of round 1 arrives first, then the QC of round 1 (formed from the votes that
        // travel with the timeouts): the round certified its block, the back-off resets.
        p.on_tc(Round(1), at(0));
        assert_eq!(p.timeout_ms(), 200);
        assert_eq!(p.on_qc(Round(1), at(0)), None, "the round does not move");
        assert_eq!(p.round(), Round(2));
        assert_eq!(p.timeout_ms(), 100);
        // A round that ends on a TC and certifies nothing still counts.
        p.on_tc(Round(2), at(0));
        p.on_tc(Round(3), at(0));
        assert_eq!(p.timeout_ms(), 400);
        // A late QC for an older round excuses nothing.
        assert_eq!(p.on_qc(Round(2), at(0)), None);
        assert_eq!(p.timeout_ms(), 400);
    }

    #[test]
    fn grace_delays_the_back_off() {
        let mut p = Pacemaker::new(
            Round(1),
            PacemakerConfig {
                max_backoff_exponent: 5,
                ..PacemakerConfig::fixed(100)
            },
            2,
            0,
        );
        p.on_tc(Round(1), at(0));
        p.on_tc(Round(2), at(0));
        assert_eq!(p.timeout_ms(), 100);
        p.on_tc(Round(3), at(0));
        assert_eq!(p.timeout_ms(), 200);
    }

    #[test]
    fn the_base_follows_round_latency_within_bounds() {
        let mut p = Pacemaker::new(Round(1), PacemakerConfig::default(), 0, 0);
        assert_eq!(p.timeout_ms(), 1_000, "no samples: the maximum");
        // Rounds of 30 ms: 3 x 30 = 90, raised to the 200 ms floor.
        let mut now = 0;
        for r in 1..=50 {
            now += 30;
            p.on_qc(Round(r), at(now));
        }
        assert_eq!(p.timeout_ms(), 200);
        // Rounds slow to 120 ms: 3 x p99 = 360.
        for r in 51..=150 {
            now += 120;
            p.on_qc(Round(r), at(now));
        }
        assert_eq!(p.timeout_ms(), 360);
        // Very slow rounds never push it past the maximum.
        for r in 151..=160 {
            now += 900;
            p.on_qc(Round(r), at(now));
        }
        assert_eq!(p.timeout_ms(), 1_000);
        // Back-off still doubles the adapted base.
        p.on_tc(Round(161), at(now));
        assert_eq!(p.timeout_ms(), 2_000);
    }

    #[test]
    fn one_slow_round_in_a_hundred_sets_the_p99() {
        let mut p = Pacemaker::new(Round(1), PacemakerConfig::default(), 0, 0);
        let mut now = 0;
        for r in 1..=100 {
            now += if r == 50 || r == 70 { 150 } else { 40 };
            p.on_qc(Round(r), at(now));
        }
        // Nearest-rank p99 of 100 samples is the second largest: 150 ms.
        assert_eq!(p.base_timeout_ms(), 450);
    }

    #[test]
    fn idle_rounds_wait_longer_and_sample_without_the_wait() {
        let mut p = Pacemaker::new(Round(1), PacemakerConfig::default(), 0, 400);
        let mut now = 0;
        for r in 1..=20 {
            now += 30;
            p.on_qc(Round(r), at(now));
        }
        assert_eq!(p.timeout_ms(), 200);
        // Marked idle 50 ms into the round: 200 + 400, and the round lasts 100 ms + the wait.
        now += 50;
        p.mark_idle(at(now));
        assert_eq!(p.timeout_ms(), 600);
        now += 500;
        p.on_qc(Round(21), at(now));
        assert_eq!(
            p.timeout_ms(),
            300,
            "the idle round samples 100 ms: 3 x 100"
        );
        // Catching up over several rounds at once is no sample.
        now += 5_000;
        p.on_qc(Round(30), at(now));
        assert_eq!(p.timeout_ms(), 300);
        // Nor a round that timed out here and still ended on a QC.
        p.on_local_timeout();
        now += 1_000;
        p.on_qc(Round(31), at(now));
        assert_eq!(p.timeout_ms(), 300);
    }
}
