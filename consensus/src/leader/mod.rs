//! Leader election: who proposes in a round.
//!
//! Every honest replica must name the same leader for a round, so an election may depend only
//! on the committee and on committed history. [`LeaderElection`] is the interface the core
//! asks; the core feeds it every block it commits ([`LeaderElection::on_commit`]), in height
//! order, exactly once per replica life (an embedder that rebuilds a core feeds the new
//! election the recent committed blocks first: [`Election::recover`]).
//!
//! Two schedules, chosen by [`ElectionConfig::kind`] through [`Election`]:
//! - [`WeightedRoundRobin`]: stake-weighted round robin, independent of history;
//! - [`Reputation`] (the default): validators that proposed or voted in a window of recent
//!   committed blocks weigh far more than inactive ones, and proposers that failed recently
//!   (recorded in the blocks that skipped their rounds) weigh least, so a crashed validator
//!   loses its turns within a few rounds and regains them once it takes part again.
//!
//! Rule shared by every schedule: a block records the leaders of the rounds it skips
//! ([`keel_types::Block::failed_leaders`]; `None` for a round the proposer's history does not
//! decide yet), and a replica whose history decides a skipped round votes only if the leader
//! named for it matches its own election (`Core::vote_for`); committed blocks are therefore a
//! record of failures the committee checked. (A replica that is not final for a round cannot
//! check it and does not refuse: refusing there could stall a committee whose members are
//! final for different rounds, which the simulator found.)

mod reputation;
mod round_robin;

pub use reputation::{Reputation, ValidatorReputation};
pub use round_robin::WeightedRoundRobin;

use crate::{
    block_tree::CommittedBlock,
    error::{Error, Result},
};
use keel_types::{Committee, Height, Round, ValidatorIndex};
use serde::{Deserialize, Serialize};

/// Chooses the leader of a round; must be deterministic.
pub trait LeaderElection {
    /// The leader of `round`.
    fn leader(&self, round: Round) -> ValidatorIndex;

    /// Whether [`LeaderElection::leader`] of `round` is final here: computed from history
    /// every replica that holds it agrees on. A history-free schedule is always final; a
    /// history-based one is not for rounds beyond what this replica has committed.
    fn is_final(&self, _round: Round) -> bool {
        true
    }

    /// `block` was committed (called in height order, once per block).
    fn on_commit(&mut self, _block: &CommittedBlock) {}
}

/// Which schedule a committee uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectionKind {
    /// [`Reputation`].
    #[default]
    Reputation,
    /// [`WeightedRoundRobin`].
    RoundRobin,
}

/// Default of [`ElectionConfig::exclude_rounds`]: the last 10 rounds are left out.
pub const DEFAULT_EXCLUDE_ROUNDS: u64 = 10;
/// Default of [`ElectionConfig::proposer_window_per_validator`].
pub const DEFAULT_PROPOSER_WINDOW_PER_VALIDATOR: usize = 10;
/// Default of [`ElectionConfig::voter_window_per_validator`].
pub const DEFAULT_VOTER_WINDOW_PER_VALIDATOR: usize = 2;
/// Default of [`ElectionConfig::active_weight`].
pub const DEFAULT_ACTIVE_WEIGHT: u64 = 1_000;
/// Default of [`ElectionConfig::inactive_weight`].
pub const DEFAULT_INACTIVE_WEIGHT: u64 = 10;
/// Default of [`ElectionConfig::failed_weight`].
pub const DEFAULT_FAILED_WEIGHT: u64 = 1;
/// Default of [`ElectionConfig::failure_threshold_percent`].
pub const DEFAULT_FAILURE_THRESHOLD_PERCENT: u64 = 10;
/// Largest [`ElectionConfig::exclude_rounds`] (bounds the history kept).
const MAX_EXCLUDE_ROUNDS: u64 = 1_000;
/// Largest window per validator (bounds the history kept).
const MAX_WINDOW_PER_VALIDATOR: usize = 100;

/// Leader election parameters: committee-wide (replicas with different values disagree on
/// leaders), loadable from a config file (every field defaults to its `DEFAULT_*` constant,
/// unknown fields are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionConfig {
    /// The schedule.
    pub kind: ElectionKind,
    /// The leader of round `r` is computed from committed blocks of rounds up to `r -
    /// exclude_rounds` only: the most recent rounds may not be committed everywhere yet. At
    /// least 3: a replica voting in round `r` (having committed at most `r - 2`) must already
    /// know the leader of `r + 1`, its vote's recipient.
    pub exclude_rounds: u64,
    /// Proposals and failures are counted over the last `proposer_window_per_validator x
    /// committee size` committed blocks.
    pub proposer_window_per_validator: usize,
    /// Votes are counted over the last `voter_window_per_validator x committee size`
    /// committed blocks (the signers of the parent QC each block carries).
    pub voter_window_per_validator: usize,
    /// Weight of a validator that proposed or voted in its windows.
    pub active_weight: u64,
    /// Weight of a validator that did neither.
    pub inactive_weight: u64,
    /// Weight of a validator whose failed rounds exceed the threshold.
    pub failed_weight: u64,
    /// A validator whose failures exceed this share of its leader rounds (failed and
    /// committed) in the proposer window gets [`ElectionConfig::failed_weight`].
    pub failure_threshold_percent: u64,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            kind: ElectionKind::default(),
            exclude_rounds: DEFAULT_EXCLUDE_ROUNDS,
            proposer_window_per_validator: DEFAULT_PROPOSER_WINDOW_PER_VALIDATOR,
            voter_window_per_validator: DEFAULT_VOTER_WINDOW_PER_VALIDATOR,
            active_weight: DEFAULT_ACTIVE_WEIGHT,
            inactive_weight: DEFAULT_INACTIVE_WEIGHT,
            failed_weight: DEFAULT_FAILED_WEIGHT,
            failure_threshold_percent: DEFAULT_FAILURE_THRESHOLD_PERCENT,
        }
    }
}

impl ElectionConfig {
    /// Checks the values an election cannot run with; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::Config {
                field,
                reason: reason.into(),
            })
        };
        if !(3..=MAX_EXCLUDE_ROUNDS).contains(&self.exclude_rounds) {
            return bad(
                "election.exclude_rounds",
                "must be 3..=1000: a replica voting in round r has committed at most round r - 2 \
                 and must know the leader of r + 1",
            );
        }
        if !(1..=MAX_WINDOW_PER_VALIDATOR).contains(&self.proposer_window_per_validator) {
            return bad("election.proposer_window_per_validator", "must be 1..=100");
        }
        if !(1..=MAX_WINDOW_PER_VALIDATOR).contains(&self.voter_window_per_validator) {
            return bad("election.voter_window_per_validator", "must be 1..=100");
        }
        for (field, weight) in [
            ("election.active_weight", self.active_weight),
            ("election.inactive_weight", self.inactive_weight),
            ("election.failed_weight", self.failed_weight),
        ] {
            if weight == 0 {
                return bad(field, "must be positive (every validator keeps a chance)");
            }
        }
        if self.failure_threshold_percent > 100 {
            return bad("election.failure_threshold_percent", "must be at most 100");
        }
        Ok(())
    }
}

/// The configured schedule.
#[derive(Debug, Clone)]
pub enum Election {
    /// Stake-weighted round robin.
    RoundRobin(WeightedRoundRobin),
    /// Reputation-based (boxed: it carries its history).
    Reputation(Box<Reputation>),
}

impl Election {
    /// The schedule `config` names, for `committee`, with no history yet.
    pub fn new(config: &ElectionConfig, committee: &Committee) -> Self {
        match config.kind {
            ElectionKind::RoundRobin => Election::RoundRobin(WeightedRoundRobin::new(committee)),
            ElectionKind::Reputation => {
                Election::Reputation(Box::new(Reputation::new(committee, *config)))
            }
        }
    }

    /// Feeds a rebuilt election the committed chain up to `root` (see
    /// [`Reputation::recover`]); round robin needs nothing.
    pub fn recover(&mut self, root: Height, recent: &[CommittedBlock]) {
        if let Election::Reputation(r) = self {
            r.recover(root, recent);
        }
    }

    /// How many of the most recent committed blocks an embedder must feed a rebuilt election
    /// ([`Election::recover`]) for it to agree with replicas that never restarted.
    pub fn history_len(&self) -> usize {
        match self {
            Election::RoundRobin(_) => 0,
            Election::Reputation(r) => r.history_len(),
        }
    }

    /// The reputation of every validator as the leader of `round` is drawn (empty for round
    /// robin).
    pub fn reputations(&self, round: Round) -> Vec<ValidatorReputation> {
        match self {
            Election::RoundRobin(_) => Vec::new(),
            Election::Reputation(r) => r.reputations(round),
        }
    }
}

impl LeaderElection for Election {
    fn leader(&self, round: Round) -> ValidatorIndex {
        match self {
            Election::RoundRobin(e) => e.leader(round),
            Election::Reputation(e) => e.leader(round),
        }
    }

    fn is_final(&self, round: Round) -> bool {
        match self {
            Election::RoundRobin(e) => e.is_final(round),
            Election::Reputation(e) => e.is_final(round),
        }
    }

    fn on_commit(&mut self, block: &CommittedBlock) {
        match self {
            Election::RoundRobin(e) => e.on_commit(block),
            Election::Reputation(e) => e.on_commit(block),
        }
    }
}
