//! The core's interface with its embedder: what goes in and what comes out. The payload traits
//! ([`PayloadSource`], [`PayloadValidator`]) are how a dissemination layer plugs in without
//! consensus depending on it; [`CoreConfig`] holds the tunables (serde, with `DEFAULT_*`
//! constants); [`CoreDeps`] is what a core is built from; [`RecoveryData`] is where a
//! replica starts (fresh, after a crash, or amnesiac after losing its safety data); [`Input`] and [`Action`] are the one entry point's
//! vocabulary; [`CoreStats`] counts what the core saw and did.

use crate::{
    block_tree::{CommitRoot, CommittedBlock},
    error::{Error, Result},
    leader::ElectionConfig,
    message::{CertificateAnswer, ConsensusMessage, Verified},
    pacemaker::PacemakerConfig,
    safety::SafetyData,
};
use keel_types::{
    Block, ChainId, Committee, Digest, KeyPair, ProofOfAvailability, QuorumCertificate, Round,
    SignedBlock, TimestampMs, ValidatorIndex, consensus::MAX_BLOCK_PAYLOAD,
};
use serde::{Deserialize, Serialize};

/// What a proposal's payload must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimit {
    /// Most proofs ([`CoreConfig::max_block_proofs`]).
    pub proofs: usize,
    /// Most batch bytes in total ([`CoreConfig::max_block_bytes`]).
    pub bytes: u64,
    /// The block's timestamp: a batch expiring at or before it may not be ordered.
    pub timestamp: TimestampMs,
}

/// Supplies the payload (proofs of availability) of this replica's proposals.
pub trait PayloadSource {
    /// Proofs within `limit` to include in a block at `round` extending `parent` (the core
    /// drops anything beyond the proof and byte limits).
    fn pull(
        &mut self,
        round: Round,
        parent: Digest,
        limit: PayloadLimit,
    ) -> Vec<ProofOfAvailability>;

    /// Whether [`PayloadSource::pull`] would return anything now. An idle leader waits up to
    /// [`CoreConfig::max_idle_wait_ms`] while this is false (the embedder reports new payload
    /// with [`Input::PayloadAvailable`]). The default, `true`, never waits.
    fn has_payload(&self) -> bool {
        true
    }
}

/// Decides whether a proposal's payload may be voted for.
///
/// A verified proposal's proofs of availability have *not* been checked (see
/// [`crate::Verified`]): the validator must check them. The core calls it only when it is
/// about to vote: for the proposal of the current round's leader, after the proposal's
/// timestamp and the safety rules allow a vote, immediately before the vote is signed. So an
/// implementation may record the proposal's proofs as proposed when it returns `true`.
pub trait PayloadValidator {
    /// Whether this replica may vote for `block`'s payload.
    fn validate(&mut self, block: &Block) -> bool;
}

/// A payload source and validator for committees that order nothing (tests, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyPayload;

impl PayloadSource for EmptyPayload {
    fn pull(&mut self, _: Round, _: Digest, _: PayloadLimit) -> Vec<ProofOfAvailability> {
        Vec::new()
    }

    fn has_payload(&self) -> bool {
        false
    }
}

impl PayloadValidator for EmptyPayload {
    fn validate(&mut self, _block: &Block) -> bool {
        true
    }
}

/// Default of [`CoreConfig::max_future_rounds`]: messages up to 100 rounds ahead are kept.
pub const DEFAULT_MAX_FUTURE_ROUNDS: u64 = 100;
/// Default of [`CoreConfig::max_pending`]: 256 proposals may wait for their parents.
pub const DEFAULT_MAX_PENDING: usize = 256;
/// Default of [`CoreConfig::max_blocks`]: 4,096 uncommitted blocks are kept.
pub const DEFAULT_MAX_BLOCKS: usize = 4_096;
/// Default of [`CoreConfig::max_clock_drift_ms`]: a block may be stamped up to 10 s ahead of
/// this replica's clock.
pub const DEFAULT_MAX_CLOCK_DRIFT_MS: u64 = 10_000;
/// Default of [`CoreConfig::min_block_interval_ms`]: a leader following a QC waits until 20 ms
/// after its parent's timestamp, so an idle committee makes at most 50 empty blocks a second.
pub const DEFAULT_MIN_BLOCK_INTERVAL_MS: u64 = 10;
/// Default of [`CoreConfig::max_block_proofs`]: at most 200 proofs of availability per block.
pub const DEFAULT_MAX_BLOCK_PROOFS: usize = 200;
/// Default of [`CoreConfig::max_block_bytes`]: the batches a block orders hold at most 32 MiB
/// in total (what every executor loads for it).
pub const DEFAULT_MAX_BLOCK_BYTES: u64 = 32 << 20;
/// Default of [`CoreConfig::max_idle_wait_ms`]: an idle leader waits up to 400 ms for payload,
/// so an idle committee commits a few blocks a second rather than one per block interval.
pub const DEFAULT_MAX_IDLE_WAIT_MS: u64 = 400;

// The default must be a limit the verification of any block allows.
const _: () = assert!(DEFAULT_MAX_BLOCK_PROOFS <= MAX_BLOCK_PAYLOAD);

/// The core's tunables: pure parameters, the same on every replica of a committee, loadable
/// from a config file (every field is optional there and defaults to its `DEFAULT_*`
/// constant; unknown fields are refused). Who this replica is and which chain it runs are not
/// tunables: they come with [`CoreDeps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Round timers.
    pub pacemaker: PacemakerConfig,
    /// Who leads each round (committee-wide; the embedder builds the election from it).
    pub election: ElectionConfig,
    /// Messages further ahead than this many rounds are dropped.
    pub max_future_rounds: u64,
    /// Most proposals kept while their parents are fetched.
    pub max_pending: usize,
    /// Most uncommitted blocks kept.
    pub max_blocks: usize,
    /// How far ahead of this replica's clock a block's timestamp may be for it to vote.
    pub max_clock_drift_ms: u64,
    /// A leader following a QC proposes no sooner than this long after its parent's
    /// timestamp, so an idle committee does not spin through empty rounds (0: at once).
    pub min_block_interval_ms: u64,
    /// Most proofs of availability in a block: the most a leader pulls from its
    /// [`PayloadSource`], and the most a proposal may carry to pass [`crate::Core::precheck`].
    /// A committee-wide parameter (a replica with a lower value drops larger proposals); never
    /// above [`MAX_BLOCK_PAYLOAD`], the limit of block verification.
    pub max_block_proofs: usize,
    /// Most bytes of batches a block may order (the sum of its proofs' certified
    /// `num_bytes`): the most a leader pulls, and the most a proposal may order to pass
    /// [`crate::Core::precheck`] and to be voted for, so a Byzantine leader cannot make every
    /// executor load gigabytes. Committee-wide, like `max_block_proofs`.
    pub max_block_bytes: u64,
    /// Idle pacing: a leader following a QC with no payload to propose, and none waiting in
    /// the uncommitted blocks below its parent, waits up to this long for payload before
    /// proposing an empty block; payload arriving ([`Input::PayloadAvailable`]) ends the wait
    /// (0: never wait). With `min_block_interval_ms`, at most half the round timeout.
    pub max_idle_wait_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            pacemaker: PacemakerConfig::default(),
            election: ElectionConfig::default(),
            max_future_rounds: DEFAULT_MAX_FUTURE_ROUNDS,
            max_pending: DEFAULT_MAX_PENDING,
            max_blocks: DEFAULT_MAX_BLOCKS,
            max_clock_drift_ms: DEFAULT_MAX_CLOCK_DRIFT_MS,
            min_block_interval_ms: DEFAULT_MIN_BLOCK_INTERVAL_MS,
            max_block_proofs: DEFAULT_MAX_BLOCK_PROOFS,
            max_block_bytes: DEFAULT_MAX_BLOCK_BYTES,
            max_idle_wait_ms: DEFAULT_MAX_IDLE_WAIT_MS,
        }
    }
}

impl CoreConfig {
    /// Checks the values a core cannot run with; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.max_block_proofs > MAX_BLOCK_PAYLOAD {
            return bad(
                "max_block_proofs",
                format!(
                    "{} is above the block payload limit {MAX_BLOCK_PAYLOAD}",
                    self.max_block_proofs
                ),
            );
        }
        if self.max_block_bytes == 0 {
            return bad("max_block_bytes", "must be positive".into());
        }
        if self.pacemaker.base_timeout_ms == 0 {
            return bad("pacemaker.base_timeout_ms", "must be positive".into());
        }
        if self.pacemaker.min_timeout_ms == 0
            || self.pacemaker.min_timeout_ms > self.pacemaker.base_timeout_ms
        {
            return bad(
                "pacemaker.min_timeout_ms",
                format!(
                    "{} must be positive and at most pacemaker.base_timeout_ms {}",
                    self.pacemaker.min_timeout_ms, self.pacemaker.base_timeout_ms
                ),
            );
        }
        if self.pacemaker.latency_multiplier == 0 {
            return bad("pacemaker.latency_multiplier", "must be positive".into());
        }
        if !(1..=10_000).contains(&self.pacemaker.latency_window) {
            return bad("pacemaker.latency_window", "must be 1..=10000".into());
        }
        // A leader following a QC waits the block interval before proposing: the shortest
        // round timeout must leave the other half for the network trips.
        if self.min_block_interval_ms > self.pacemaker.min_timeout_ms / 2 {
            return bad(
                "min_block_interval_ms",
                format!(
                    "{} ms must be at most half of pacemaker.min_timeout_ms {} ms",
                    self.min_block_interval_ms, self.pacemaker.min_timeout_ms
                ),
            );
        }
        self.election.validate()?;
        // Rounds in which a leader may wait for payload get that wait added to their timer;
        // the wait is still bounded by half the longest timeout, so an idle leader's round
        // never lasts beyond what a replica without latency samples waits anyway.
        if self
            .max_idle_wait_ms
            .saturating_add(self.min_block_interval_ms)
            > self.pacemaker.base_timeout_ms / 2
        {
            return bad(
                "max_idle_wait_ms",
                format!(
                    "{} ms plus min_block_interval_ms {} ms must be at most half the round timeout {} ms",
                    self.max_idle_wait_ms,
                    self.min_block_interval_ms,
                    self.pacemaker.base_timeout_ms
                ),
            );
        }
        if self.max_future_rounds == 0 {
            return bad("max_future_rounds", "must be positive".into());
        }
        if self.max_blocks == 0 {
            return bad("max_blocks", "must be positive".into());
        }
        Ok(())
    }
}

/// Everything a [`crate::Core`] is built from.
pub struct CoreDeps<L, P> {
    /// Tunables.
    pub config: CoreConfig,
    /// The chain this committee runs.
    pub chain_id: ChainId,
    /// This replica's index in the committee.
    pub me: ValidatorIndex,
    /// The committee of the epoch.
    pub committee: Committee,
    /// This replica's protocol key (signs proposals, votes and timeouts).
    pub key: KeyPair,
    /// Who leads each round.
    pub leader: L,
    /// The payload object: pulls proofs for this replica's proposals and validates others'.
    pub payload: P,
    /// Where to start (genesis for a fresh replica, persisted state after a crash).
    pub recovery: RecoveryData,
}

/// What the core needs to start, fresh or after a crash.
#[derive(Debug, Clone)]
pub struct RecoveryData {
    /// Persisted safety data (default for a fresh replica).
    pub safety: SafetyData,
    /// Whether `safety` may be missing signatures this replica made: the embedder found no
    /// safety data in its store (wiped, or never written), or restored the store from a
    /// backup. The core then runs the amnesia guard ([`crate::amnesia`]): it signs nothing
    /// until a quorum answered [`Action::RequestCertificates`], then never below the floor
    /// their certificates set. [`RecoveryData::genesis`] leaves it `false`; a node sets it
    /// whenever its store holds no safety data, a fresh chain included (a fresh committee then
    /// spends its round 1 on a timeout certificate, see [`crate::amnesia`] rule 3).
    pub amnesiac: bool,
    /// The last committed block.
    pub root: CommitRoot,
    /// Persisted blocks; those not above the root are ignored.
    pub blocks: Vec<SignedBlock>,
    /// The highest QC persisted, if any.
    pub high_qc: Option<QuorumCertificate>,
}

impl RecoveryData {
    /// The starting point of a fresh epoch: genesis root, no blocks, no votes, and
    /// `amnesiac: false`, i.e. trusted to have signed nothing yet (tests, the simulator's
    /// default start). A replica that could have signed before sets `amnesiac` (or uses
    /// [`RecoveryData::amnesiac`]).
    pub fn genesis(committee: &Committee, chain_id: ChainId) -> Self {
        let epoch = committee.epoch();
        RecoveryData {
            safety: SafetyData {
                epoch,
                ..SafetyData::default()
            },
            root: CommitRoot {
                digest: keel_types::genesis_digest(epoch, chain_id),
                round: Round(0),
                height: keel_types::Height(0),
                timestamp: TimestampMs(0),
            },
            blocks: Vec::new(),
            high_qc: None,
            amnesiac: false,
        }
    }

    /// [`RecoveryData::genesis`] for a replica that found no safety data: `amnesiac: true`.
    pub fn amnesiac(committee: &Committee, chain_id: ChainId) -> Self {
        RecoveryData {
            amnesiac: true,
            ..RecoveryData::genesis(committee, chain_id)
        }
    }
}

/// An input to the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// Start (or restart) participating: arms the timer and proposes if leading.
    Start,
    /// A verified message from a replica (possibly this one).
    Message(Box<Verified<ConsensusMessage>>),
    /// The round timer set by [`Action::SetTimer`] expired.
    Timer {
        /// The round the timer was set for.
        round: Round,
    },
    /// Verified blocks answering [`Action::FetchBlock`]: the block asked for and possibly
    /// some of its ancestors, in any order.
    BlocksFetched(Vec<Verified<SignedBlock>>),
    /// The proposal delay set by [`Action::ProposeAfter`] has passed.
    ProposeTimer {
        /// The round to propose in.
        round: Round,
    },
    /// A peer's verified answer to [`Action::RequestCertificates`]. `from` is the peer the
    /// transport authenticated (not a field of the answer). Counted while the core is
    /// amnesiac, ignored afterwards.
    PeerCertificates {
        /// The committee member that answered.
        from: ValidatorIndex,
        /// Its highest QC and last TC, verified ([`CertificateAnswer::verify`]).
        answer: Box<Verified<CertificateAnswer>>,
    },
    /// Payload became available ([`PayloadSource::has_payload`] turned true): ends an idle
    /// leader's wait.
    PayloadAvailable,
}

/// Something the embedder must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send to one replica (possibly this one).
    Send {
        /// The recipient.
        to: ValidatorIndex,
        /// The message.
        message: ConsensusMessage,
    },
    /// Send to every replica, this one included.
    Broadcast(ConsensusMessage),
    /// Write `data` with a synced write, *then* carry out `then`.
    PersistSafety {
        /// The safety data to persist.
        data: SafetyData,
        /// Actions released once the write is durable.
        then: Vec<Action>,
    },
    /// Store a block (so that it survives a restart and can be served to peers).
    PersistBlock(SignedBlock),
    /// Deliver [`Input::ProposeTimer`] for `round` after `after_ms` (the leader waits for the
    /// minimum block interval, or idles waiting for payload), replacing earlier ones.
    ProposeAfter {
        /// The round.
        round: Round,
        /// Delay in milliseconds.
        after_ms: u64,
    },
    /// Deliver [`Input::Timer`] for `round` after `after_ms`, replacing earlier timers.
    SetTimer {
        /// The round.
        round: Round,
        /// Delay in milliseconds.
        after_ms: u64,
    },
    /// These blocks are committed, in order.
    Commit(Vec<CommittedBlock>),
    /// Fetch the block `digest` (and, to save round trips, some of its ancestors) from `from`,
    /// and feed the answer back as [`Input::BlocksFetched`].
    FetchBlock {
        /// The block wanted.
        digest: Digest,
        /// A replica likely to have it.
        from: ValidatorIndex,
    },
    /// Amnesia guard: ask each of `to` for its highest certificates (the answer each serves
    /// with [`crate::Core::certificate_answer`]), verify every answer and feed it back as
    /// [`Input::PeerCertificates`]. Emitted on start and on every round timer while the core
    /// is amnesiac; `to` lists the members that have not answered yet (never this replica).
    RequestCertificates {
        /// Whom to ask.
        to: Vec<ValidatorIndex>,
    },
}

/// Counters of what the core has seen and done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Blocks proposed.
    pub proposals: u64,
    /// Votes signed.
    pub votes: u64,
    /// Timeouts signed.
    pub timeouts: u64,
    /// QCs formed here.
    pub qcs_formed: u64,
    /// TCs formed here.
    pub tcs_formed: u64,
    /// Blocks committed.
    pub committed_blocks: u64,
    /// Equivocations detected (two proposals or two votes by one validator in one round).
    pub equivocations: u64,
    /// Messages dropped as stale, too far ahead, from a non-leader or refused by safety rules.
    pub dropped: u64,
    /// Rounds this replica left on a timeout certificate (their leader failed).
    pub failed_rounds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_the_documented_constants() {
        let c = CoreConfig::default();
        assert_eq!(c.min_block_interval_ms, 10);
        assert_eq!(c.max_block_proofs, 200);
        assert_eq!(c.pacemaker.base_timeout_ms, 1_000);
        assert_eq!(c.max_future_rounds, DEFAULT_MAX_FUTURE_ROUNDS);
        assert_eq!(c.max_pending, DEFAULT_MAX_PENDING);
        assert_eq!(c.max_blocks, DEFAULT_MAX_BLOCKS);
        assert_eq!(c.max_clock_drift_ms, DEFAULT_MAX_CLOCK_DRIFT_MS);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn config_loads_partially_and_refuses_unknown_fields() {
        let empty: CoreConfig = toml::from_str("").expect("all fields default");
        assert_eq!(empty, CoreConfig::default());
        let some: CoreConfig =
            toml::from_str("max_block_proofs = 50\n[pacemaker]\nbase_timeout_ms = 300\n")
                .expect("a partial config loads");
        assert_eq!(some.max_block_proofs, 50);
        assert_eq!(some.pacemaker.base_timeout_ms, 300);
        assert_eq!(
            some.pacemaker.max_backoff_exponent,
            crate::pacemaker::DEFAULT_MAX_BACKOFF_EXPONENT
        );
        assert_eq!(some.min_block_interval_ms, DEFAULT_MIN_BLOCK_INTERVAL_MS);
        assert!(toml::from_str::<CoreConfig>("max_block_proof = 50").is_err());
        assert!(toml::from_str::<CoreConfig>("[pacemaker]\nbase_timeout = 5").is_err());
        // Identity is not a tunable.
        assert!(toml::from_str::<CoreConfig>("me = 1").is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        let c = CoreConfig {
            max_block_proofs: MAX_BLOCK_PAYLOAD + 1,
            ..CoreConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "max_block_proofs",
                ..
            })
        ));
        let mut c = CoreConfig::default();
        c.election.exclude_rounds = 2;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "election.exclude_rounds",
                ..
            })
        ));
        let mut c = CoreConfig::default();
        c.pacemaker.min_timeout_ms = c.pacemaker.base_timeout_ms + 1;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "pacemaker.min_timeout_ms",
                ..
            })
        ));
        let mut c = CoreConfig::default();
        c.pacemaker.base_timeout_ms = 0;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "pacemaker.base_timeout_ms",
                ..
            })
        ));
    }
}
