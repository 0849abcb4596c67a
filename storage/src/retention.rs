//! Retention: which committed heights may be deleted, as a pure planner, and its config section.
//!
//! The node keeps the last `keep_blocks` executed heights (blocks, their batches and receipts)
//! and deletes what lies below, a bounded slice per pass. [`plan`] decides the slice from four
//! numbers it is given — the executed height, the lowest height still retained, an optional
//! certified-checkpoint floor and the time since the last compaction — and returns it with the
//! pruner's lag; it reads no clock and touches no store, so its rules are unit- and
//! property-tested here. The node's pruner task carries the plan out (reads the doomed blocks,
//! deletes them in one write batch with the new lowest retained height, compacts) and feeds the
//! result back as the next pass's input, so a restart resumes from the durable value.
//!
//! Rules ([`plan`] guarantees each; the tests below check them):
//! - **Never past execution**: every height deleted is at most `executed - keep_blocks`, so the
//!   last `keep_blocks` executed heights and everything not yet executed stay.
//! - **Never past the checkpoint floor**: with a floor `F` (the height of the latest certified
//!   checkpoint), every height deleted is below `F`; `F`'s block stays, so a node state-syncing
//!   from that checkpoint can fetch it and range-sync from `F + 1`. Without a floor (`None`,
//!   which is what the node passes until certified checkpoints exist) retention alone decides.
//! - **Contiguous and bounded**: a pass deletes `[retained_from, to)` — it starts exactly at the
//!   lowest retained height, so the retained heights stay one contiguous range — and at most
//!   `max_heights_per_pass` heights.
//! - **Monotone**: the lowest retained height never decreases; raising `keep_blocks` later keeps
//!   what is left and waits for the chain to catch up.
//! - **Compaction is rate-limited**: at most once per `compact_interval_ms`, and only after
//!   something was deleted since the last one.

use crate::error::{Error, Result};
use keel_types::Height;
use serde::{Deserialize, Serialize};
use std::{ops::Range, time::Duration};

/// Default of [`PruningConfig::enabled`].
pub const DEFAULT_PRUNING_ENABLED: bool = true;
/// Default of [`PruningConfig::keep_blocks`]: about 35 minutes of an idle chain at its maximum
/// of 50 blocks a second, longer under load (fewer, fuller blocks).
pub const DEFAULT_KEEP_BLOCKS: u64 = 100_000;
/// Default of [`PruningConfig::interval_ms`].
pub const DEFAULT_PRUNE_INTERVAL_MS: u64 = 1_000;
/// Default of [`PruningConfig::max_heights_per_pass`]: with the default interval, up to 1,000
/// heights a second, 20 times the most a chain with the default 20 ms block interval commits.
pub const DEFAULT_MAX_HEIGHTS_PER_PASS: u64 = 1_000;
/// Default of [`PruningConfig::compact_interval_ms`]: ten minutes. A compaction rewrites the
/// receipts and batches columns whole (their keys are digests, so deleted entries sit in every
/// file); between two, RocksDB's own compaction returns space gradually.
pub const DEFAULT_COMPACT_INTERVAL_MS: u64 = 600_000;
/// Fewest heights a config may keep: a validator back from a short outage still finds the recent
/// committed chain at its peers.
pub const MIN_KEEP_BLOCKS: u64 = 100;
/// Most heights one pass may delete (a pass's reads and its write batch grow with it).
pub const MAX_HEIGHTS_PER_PASS: u64 = 100_000;
/// Longest pass or compaction interval accepted, in ms (one hour).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// The `[pruning]` config section: how much committed history a validator keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruningConfig {
    /// Delete old heights at all. Default: [`DEFAULT_PRUNING_ENABLED`].
    pub enabled: bool,
    /// Executed heights kept (blocks, their batches and receipts); older ones are deleted.
    /// At least [`MIN_KEEP_BLOCKS`]. Default: [`DEFAULT_KEEP_BLOCKS`].
    pub keep_blocks: u64,
    /// Time between two pruning passes, in ms. Default: [`DEFAULT_PRUNE_INTERVAL_MS`].
    pub interval_ms: u64,
    /// Most heights one pass deletes; with `interval_ms` it caps the pruning rate, which must
    /// stay at least twice the chain's block rate. Default: [`DEFAULT_MAX_HEIGHTS_PER_PASS`].
    pub max_heights_per_pass: u64,
    /// Least time between two compactions of the pruned ranges (which return the disk space of
    /// deleted data at once; each rewrites the receipts and batches columns), in ms.
    /// Default: [`DEFAULT_COMPACT_INTERVAL_MS`].
    pub compact_interval_ms: u64,
}

impl Default for PruningConfig {
    fn default() -> Self {
        PruningConfig {
            enabled: DEFAULT_PRUNING_ENABLED,
            keep_blocks: DEFAULT_KEEP_BLOCKS,
            interval_ms: DEFAULT_PRUNE_INTERVAL_MS,
            max_heights_per_pass: DEFAULT_MAX_HEIGHTS_PER_PASS,
            compact_interval_ms: DEFAULT_COMPACT_INTERVAL_MS,
        }
    }
}

impl PruningConfig {
    /// Checks every field; the error names the first at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.keep_blocks < MIN_KEEP_BLOCKS {
            return bad("keep_blocks", format!("must be at least {MIN_KEEP_BLOCKS}"));
        }
        if !(1..=MAX_HEIGHTS_PER_PASS).contains(&self.max_heights_per_pass) {
            return bad(
                "max_heights_per_pass",
                format!("must be 1..={MAX_HEIGHTS_PER_PASS}"),
            );
        }
        for (field, value) in [
            ("interval_ms", self.interval_ms),
            ("compact_interval_ms", self.compact_interval_ms),
        ] {
            if !(1..=MAX_INTERVAL_MS).contains(&value) {
                return bad(field, format!("must be 1..={MAX_INTERVAL_MS}"));
            }
        }
        Ok(())
    }

    /// The most heights a second the pruner deletes when it is behind.
    pub fn max_heights_per_second(&self) -> f64 {
        self.max_heights_per_pass as f64 * 1000.0 / self.interval_ms.max(1) as f64
    }
}

/// What a pass is planned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneInput {
    /// The highest executed height.
    pub executed: Height,
    /// The lowest height still retained (1 before anything was pruned; genesis, height 0,
    /// has no block).
    pub retained_from: Height,
    /// The height of the latest certified checkpoint: nothing at or above it is deleted.
    /// `None`: no checkpoint constrains pruning, retention alone decides.
    pub checkpoint_floor: Option<Height>,
    /// Heights deleted since the last compaction (by earlier passes).
    pub pruned_since_compaction: u64,
    /// Time since the last compaction (or since the pruner started).
    pub since_compaction: Duration,
}

/// What a pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// Heights to delete, `[retained_from, end)`; `None`: nothing is due.
    pub delete: Option<Range<Height>>,
    /// Compact the pruned ranges after deleting.
    pub compact: bool,
    /// Heights that may already be deleted but are not (before this pass).
    pub lag_blocks: u64,
}

/// The lowest height retention requires to keep: `executed - keep_blocks + 1` (the last
/// `keep_blocks` executed heights stay), lowered to the checkpoint floor if there is one, and
/// never below 1.
pub fn retention_target(
    config: &PruningConfig,
    executed: Height,
    checkpoint_floor: Option<Height>,
) -> Height {
    let by_retention = executed
        .0
        .saturating_sub(config.keep_blocks)
        .saturating_add(1);
    let target = match checkpoint_floor {
        Some(floor) => by_retention.min(floor.0),
        None => by_retention,
    };
    Height(target.max(1))
}

/// Plans one pruning pass (see the rules in the module documentation).
pub fn plan(config: &PruningConfig, input: &PruneInput) -> PrunePlan {
    if !config.enabled {
        return PrunePlan {
            delete: None,
            compact: false,
            lag_blocks: 0,
        };
    }
    let from = Height(input.retained_from.0.max(1));
    let target = retention_target(config, input.executed, input.checkpoint_floor);
    let lag_blocks = target.0.saturating_sub(from.0);
    let end = Height(
        from.0
            .saturating_add(config.max_heights_per_pass.max(1))
            .min(target.0),
    );
    let delete = (end > from).then_some(from..end);
    let deleting = delete.as_ref().map_or(0, |r| r.end.0 - r.start.0);
    let compact = input.pruned_since_compaction.saturating_add(deleting) > 0
        && input.since_compaction >= Duration::from_millis(config.compact_interval_ms);
    PrunePlan {
        delete,
        compact,
        lag_blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(keep: u64, per_pass: u64) -> PruningConfig {
        PruningConfig {
            keep_blocks: keep,
            max_heights_per_pass: per_pass,
            ..PruningConfig::default()
        }
    }

    fn input(executed: u64, retained_from: u64, floor: Option<u64>) -> PruneInput {
        PruneInput {
            executed: Height(executed),
            retained_from: Height(retained_from),
            checkpoint_floor: floor.map(Height),
            pruned_since_compaction: 0,
            since_compaction: Duration::ZERO,
        }
    }

    #[test]
    fn keeps_the_last_keep_blocks_executed_heights() {
        let c = config(100, 1_000);
        // 150 executed, keep 100: heights 1..=50 may go, 51..=150 stay.
        let p = plan(&c, &input(150, 1, None));
        assert_eq!(p.delete, Some(Height(1)..Height(51)));
        assert_eq!(p.lag_blocks, 50);
        // Not yet past the window: nothing.
        assert_eq!(plan(&c, &input(100, 1, None)).delete, None);
        assert_eq!(plan(&c, &input(0, 1, None)).delete, None);
        // Already there: nothing, no lag.
        let p = plan(&c, &input(150, 51, None));
        assert_eq!((p.delete, p.lag_blocks), (None, 0));
    }

    #[test]
    fn a_pass_is_bounded_and_the_next_resumes_where_it_stopped() {
        let c = config(100, 30);
        let p = plan(&c, &input(200, 1, None));
        assert_eq!(p.delete, Some(Height(1)..Height(31)));
        assert_eq!(p.lag_blocks, 100);
        let p = plan(&c, &input(200, 31, None));
        assert_eq!(p.delete, Some(Height(31)..Height(61)));
        let p = plan(&c, &input(200, 91, None));
        assert_eq!(p.delete, Some(Height(91)..Height(101)));
    }

    #[test]
    fn the_checkpoint_floor_holds_pruning_back() {
        let c = config(100, 1_000);
        let p = plan(&c, &input(1_000, 1, Some(40)));
        assert_eq!(
            p.delete,
            Some(Height(1)..Height(40)),
            "the floor's block stays"
        );
        assert_eq!(p.lag_blocks, 39);
        // A floor above the retention target does not let more go.
        let p = plan(&c, &input(1_000, 1, Some(5_000)));
        assert_eq!(p.delete, Some(Height(1)..Height(901)));
        // A floor below what is already pruned: nothing (never goes back).
        assert_eq!(plan(&c, &input(1_000, 500, Some(40))).delete, None);
    }

    #[test]
    fn disabled_plans_nothing() {
        let c = PruningConfig {
            enabled: false,
            ..config(100, 1_000)
        };
        let p = plan(&c, &input(1_000_000, 1, None));
        assert_eq!((p.delete, p.compact, p.lag_blocks), (None, false, 0));
    }

    #[test]
    fn compaction_waits_for_its_interval_and_for_deleted_data() {
        let c = PruningConfig {
            compact_interval_ms: 1_000,
            ..config(100, 10)
        };
        let mut i = input(100, 1, None);
        i.since_compaction = Duration::from_secs(5);
        assert!(!plan(&c, &i).compact, "nothing deleted since the last one");
        i.pruned_since_compaction = 3;
        assert!(plan(&c, &i).compact);
        i.since_compaction = Duration::from_millis(999);
        assert!(!plan(&c, &i).compact, "too soon");
        let mut i = input(500, 1, None);
        i.since_compaction = Duration::from_secs(1);
        assert!(plan(&c, &i).compact, "this pass deletes");
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = PruningConfig::default();
        assert!(c.enabled);
        assert_eq!(c.keep_blocks, 100_000);
        assert!(c.validate().is_ok());
        assert!(c.max_heights_per_second() >= 2.0 * 50.0);
        let field = |c: PruningConfig| match c.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(config(99, 10)), "keep_blocks");
        assert_eq!(field(config(100, 0)), "max_heights_per_pass");
        assert_eq!(
            field(PruningConfig {
                interval_ms: 0,
                ..c.clone()
            }),
            "interval_ms"
        );
        assert_eq!(
            field(PruningConfig {
                compact_interval_ms: MAX_INTERVAL_MS + 1,
                ..c
            }),
            "compact_interval_ms"
        );
        let parsed: PruningConfig = toml_like(&[("keep_blocks", 200)]);
        assert_eq!(parsed.keep_blocks, 200);
        assert_eq!(parsed.interval_ms, DEFAULT_PRUNE_INTERVAL_MS);
    }

    fn toml_like(pairs: &[(&'static str, u64)]) -> PruningConfig {
        use serde::de::{IntoDeserializer, value::MapDeserializer};
        let de: MapDeserializer<'_, _, serde::de::value::Error> =
            MapDeserializer::new(pairs.iter().map(|(k, v)| (*k, v.into_deserializer())));
        PruningConfig::deserialize(de).unwrap()
    }

    proptest! {
        /// Whatever the inputs: the deleted range starts at the lowest retained height, is
        /// bounded, stays `keep_blocks` behind execution and below the floor; repeating passes
        /// reaches exactly the retention target.
        #[test]
        fn passes_never_overstep_and_converge(
            executed in 0u64..50_000,
            retained_from in 0u64..60_000,
            keep in 100u64..5_000,
            per_pass in 1u64..2_000,
            floor in proptest::option::of(0u64..60_000),
        ) {
            let c = config(keep, per_pass);
            let mut r = Height(retained_from);
            let target = retention_target(&c, Height(executed), floor.map(Height));
            let mut passes = 0u64;
            loop {
                let p = plan(&c, &input(executed, r.0, floor));
                let Some(range) = p.delete else {
                    // Done: either at the target or already beyond it (never goes back).
                    prop_assert!(r.0.max(1) >= target.0);
                    prop_assert_eq!(p.lag_blocks, 0);
                    break;
                };
                prop_assert_eq!(range.start, Height(r.0.max(1)));
                prop_assert!(range.end > range.start);
                prop_assert!(range.end.0 - range.start.0 <= per_pass);
                // Every deleted height h < end satisfies h <= executed - keep.
                prop_assert!(range.end.0 <= executed.saturating_sub(keep) + 1);
                if let Some(f) = floor {
                    prop_assert!(range.end.0 <= f.max(1));
                }
                prop_assert_eq!(p.lag_blocks, target.0 - range.start.0);
                r = range.end;
                passes += 1;
                prop_assert!(passes <= 60_000);
            }
        }
    }
}
