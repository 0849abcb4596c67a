//! The protocol core: one entry point, [`Core::handle`], from inputs to actions.
//!
//! The core does no I/O, reads no clock (time arrives with each input) and uses no randomness,
//! so the same inputs always give the same actions. Its embedder carries the actions out in
//! order: it persists blocks, performs [`Action::PersistSafety`] as a synced write and only then
//! releases the messages it carries, delivers [`Action::Broadcast`] to every replica *including
//! this one*, sets timers, serves block fetches and applies commits.
//!
//! Round flow (Jolteon):
//! - Entering round `r` (on a QC or TC for `r - 1`) arms the round timer; the leader of `r`
//!   proposes a block on its highest QC, carrying the TC when the previous round timed out.
//! - A replica processes a proposal's certificates first (which may advance its round and
//!   commit), then votes for it if the safety rules allow, sending the vote to the leader of
//!   `r + 1`, which forms the QC and proposes on it.
//! - On timer expiry a replica broadcasts a signed timeout with its highest QC; more than 1/3 of
//!   the stake timing out makes the others time out too; 2/3 form a TC.
//! - A QC for block `B` whose parent `P` is one round below `B` commits `P` and its ancestors.
//! - Messages more than `max_future_rounds` ahead are dropped; blocks whose parent is unknown
//!   wait (bounded) while the parent is fetched.

use crate::{
    aggregator::{TimeoutAggregator, TimeoutOutcome, VoteAggregator, VoteOutcome},
    block_tree::{BlockTree, CommitRoot, CommittedBlock, InsertOutcome},
    error::{Error, Result},
    leader::LeaderElection,
    message::{ConsensusMessage, Verified},
    pacemaker::{Pacemaker, PacemakerConfig},
    safety::{SafetyData, SafetyRules},
};
use keel_types::{
    Block, ChainId, Committee, Digest, KeyPair, ProofOfAvailability, QuorumCertificate, Round,
    SignedBlock, Timeout, TimeoutCertificate, TimestampMs, ValidatorIndex,
};
use std::collections::{BTreeMap, HashSet};

/// Supplies the payload (proofs of availability) of this replica's proposals.
pub trait PayloadSource {
    /// Proofs to include in a block at `round` extending `parent`.
    fn pull(&mut self, round: Round, parent: Digest) -> Vec<ProofOfAvailability>;
}

/// Decides whether a proposal's payload may be voted for.
pub trait PayloadValidator {
    /// Whether this replica may vote for `block`'s payload.
    fn validate(&self, block: &Block) -> bool;
}

/// A payload source and validator for committees that order nothing (tests, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyPayload;

impl PayloadSource for EmptyPayload {
    fn pull(&mut self, _round: Round, _parent: Digest) -> Vec<ProofOfAvailability> {
        Vec::new()
    }
}

impl PayloadValidator for EmptyPayload {
    fn validate(&self, _block: &Block) -> bool {
        true
    }
}

/// Parameters of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The chain this committee runs.
    pub chain_id: ChainId,
    /// This replica's index in the committee.
    pub me: ValidatorIndex,
    /// Round timers.
    pub pacemaker: PacemakerConfig,
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
}

impl CoreConfig {
    /// Defaults for `me` on `chain_id`.
    pub fn new(chain_id: ChainId, me: ValidatorIndex) -> Self {
        CoreConfig {
            chain_id,
            me,
            pacemaker: PacemakerConfig::default(),
            max_future_rounds: 100,
            max_pending: 256,
            max_blocks: 4_096,
            max_clock_drift_ms: 10_000,
            min_block_interval_ms: 0,
        }
    }
}

/// What the core needs to start, fresh or after a crash.
#[derive(Debug, Clone)]
pub struct RecoveryData {
    /// Persisted safety data (default for a fresh replica).
    pub safety: SafetyData,
    /// The last committed block.
    pub root: CommitRoot,
    /// Persisted blocks; those not above the root are ignored.
    pub blocks: Vec<SignedBlock>,
    /// The highest QC persisted, if any.
    pub high_qc: Option<QuorumCertificate>,
}

impl RecoveryData {
    /// The starting point of a fresh epoch: genesis root, no blocks, no votes.
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
    /// minimum block interval).
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
}

/// The consensus state machine of one replica.
pub struct Core<L, P, V> {
    config: CoreConfig,
    committee: Committee,
    leader: L,
    payload_source: P,
    payload_validator: V,
    safety: SafetyRules,
    pacemaker: Pacemaker,
    tree: BlockTree,
    high_qc: QuorumCertificate,
    last_tc: Option<TimeoutCertificate>,
    votes: VoteAggregator,
    timeouts: TimeoutAggregator,
    pending: Vec<SignedBlock>,
    proposals_seen: BTreeMap<Round, Digest>,
    proposed_round: Option<Round>,
    last_timeout: Option<Timeout>,
    /// Blocks asked for (certified ones, or parents of waiting proposals): only these and their
    /// ancestors are accepted from fetch replies.
    requested: HashSet<Digest>,
    fetch_attempts: usize,
    now: TimestampMs,
    stats: CoreStats,
}

impl<L: LeaderElection, P: PayloadSource, V: PayloadValidator> Core<L, P, V> {
    /// Builds the core from recovery data (genesis for a fresh replica).
    pub fn new(
        config: CoreConfig,
        committee: Committee,
        key: KeyPair,
        leader: L,
        payload: (P, V),
        recovery: RecoveryData,
    ) -> Self {
        let mut tree = BlockTree::new(recovery.root, config.max_blocks);
        let mut blocks = recovery.blocks;
        blocks.sort_by_key(|b| b.block.round);
        let genesis_qc = QuorumCertificate::genesis(committee.epoch(), config.chain_id);
        let mut high_qc = recovery.high_qc.unwrap_or(genesis_qc);
        if let Some(qc) = &recovery.safety.high_qc
            && qc.round() > high_qc.round()
        {
            high_qc = qc.clone();
        }
        for b in blocks {
            if b.block.parent_qc.round() > high_qc.round() {
                high_qc = b.block.parent_qc.clone();
            }
            tree.insert(b);
        }
        // Resume in the round the persisted certificates justify: never below a round this
        // replica already signed in, so it can time out there if nothing else happens.
        let last_tc = recovery.safety.last_tc.clone();
        let after_qc = high_qc.round().checked_next().unwrap_or(high_qc.round());
        let after_tc = last_tc
            .as_ref()
            .and_then(|tc| tc.round.checked_next())
            .unwrap_or_default();
        let start = after_qc.max(after_tc);
        let last_tc = last_tc.filter(|tc| tc.round.checked_next() == Some(start));
        let f = (committee.size().saturating_sub(1) / 3) as u32;
        let pacemaker = Pacemaker::new(start, config.pacemaker, 2 * f);
        let safety = SafetyRules::new(recovery.safety, key, config.me, config.chain_id);
        Core {
            config,
            committee,
            leader,
            payload_source: payload.0,
            payload_validator: payload.1,
            safety,
            pacemaker,
            tree,
            high_qc,
            last_tc,
            votes: VoteAggregator::default(),
            timeouts: TimeoutAggregator::default(),
            pending: Vec::new(),
            proposals_seen: BTreeMap::new(),
            proposed_round: None,
            last_timeout: None,
            requested: HashSet::new(),
            fetch_attempts: 0,
            now: TimestampMs(0),
            stats: CoreStats::default(),
        }
    }

    /// The current round.
    pub fn round(&self) -> Round {
        self.pacemaker.round()
    }

    /// The highest QC known.
    pub fn high_qc(&self) -> &QuorumCertificate {
        &self.high_qc
    }

    /// The last committed block.
    pub fn committed_root(&self) -> CommitRoot {
        self.tree.root()
    }

    /// The safety data as of the last signature.
    pub fn safety_data(&self) -> &SafetyData {
        self.safety.data()
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// Handles one input at time `now`; returns the actions to carry out, in order.
    pub fn handle(&mut self, now: TimestampMs, input: Input) -> Vec<Action> {
        self.now = self.now.max(now);
        let mut out = Vec::new();
        let result = match input {
            Input::Start => {
                self.enter_round(&mut out);
                Ok(())
            }
            Input::Timer { round } => {
                if round == self.round() {
                    self.local_timeout(&mut out);
                }
                Ok(())
            }
            Input::ProposeTimer { round } => {
                if round == self.round() {
                    self.maybe_propose(&mut out);
                }
                Ok(())
            }
            Input::Message(msg) => self.on_message(msg.into_inner(), &mut out),
            Input::BlocksFetched(blocks) => {
                let mut blocks: Vec<SignedBlock> =
                    blocks.into_iter().map(Verified::into_inner).collect();
                blocks.sort_by_key(|b| b.block.round);
                self.on_fetched(blocks, &mut out);
                Ok(())
            }
        };
        if result.is_err() {
            self.stats.dropped += 1;
        }
        out
    }

    /// Rejects rounds beyond the window this replica buffers. Certificates carried by a message
    /// are processed before this check (they are verified and safe at any distance, and are how
    /// a replica far behind catches up); only what would be buffered is bounded.
    fn check_window(&self, round: Round) -> Result<()> {
        let current = self.round();
        if round.0 > current.0.saturating_add(self.config.max_future_rounds) {
            return Err(Error::TooFarAhead {
                round,
                current,
                window: self.config.max_future_rounds,
            });
        }
        Ok(())
    }

    fn on_message(&mut self, msg: ConsensusMessage, out: &mut Vec<Action>) -> Result<()> {
        let round = msg.round();
        let current = self.round();
        match msg {
            ConsensusMessage::Proposal(block) => self.on_proposal(block, out),
            ConsensusMessage::Vote(vote) => {
                if vote.data.round.0.saturating_add(1) < current.0 {
                    return Err(Error::Stale { round, current });
                }
                self.check_window(round)?;
                match self.votes.add(&vote, &self.committee) {
                    VoteOutcome::NewQc(qc) => {
                        self.stats.qcs_formed += 1;
                        self.process_qc(qc, out);
                    }
                    VoteOutcome::Equivocation { .. } => self.stats.equivocations += 1,
                    VoteOutcome::Added | VoteOutcome::Duplicate => {}
                }
                Ok(())
            }
            ConsensusMessage::TimeoutCertificate(tc) => {
                self.process_tc(tc, out);
                Ok(())
            }
            ConsensusMessage::Timeout(timeout) => {
                self.process_qc(timeout.high_qc.clone(), out);
                if timeout.round < self.round() {
                    // The sender is behind: it has not seen how its round ended.
                    if let Some(tc) = &self.last_tc
                        && tc.round >= timeout.round
                    {
                        out.push(Action::Send {
                            to: timeout.author,
                            message: ConsensusMessage::TimeoutCertificate(tc.clone()),
                        });
                    }
                    return Err(Error::Stale {
                        round,
                        current: self.round(),
                    });
                }
                self.check_window(round)?;
                match self.timeouts.add(&timeout, &self.committee) {
                    TimeoutOutcome::NewTc(tc) => {
                        self.stats.tcs_formed += 1;
                        self.process_tc(tc, out);
                    }
                    TimeoutOutcome::Added { validity: true }
                        if timeout.round == self.round()
                            && self.last_timeout.as_ref().map(|t| t.round)
                                != Some(timeout.round) =>
                    {
                        // More than 1/3 gave up on this round: at least one honest replica did,
                        // so join it rather than wait out the timer.
                        self.local_timeout(out);
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    /// Adopts a QC: raises the high QC, commits by the 2-chain rule, advances the round.
    fn process_qc(&mut self, qc: QuorumCertificate, out: &mut Vec<Action>) {
        if qc.round() > self.high_qc.round() {
            self.high_qc = qc.clone();
        }
        let signers = qc.signatures.signatures();
        if !self.tree.contains(&qc.block())
            && qc.round() > self.tree.root().round
            && !signers.is_empty()
        {
            // Rotate over the signers (all hold the block) so a crashed one is not asked forever.
            self.fetch_attempts = self.fetch_attempts.wrapping_add(1);
            let (signer, _) = signers[self.fetch_attempts % signers.len()];
            self.requested.insert(qc.block());
            out.push(Action::FetchBlock {
                digest: qc.block(),
                from: signer,
            });
        }
        self.try_commit(&qc, out);
        if self.pacemaker.on_qc(qc.round()).is_some() {
            self.last_tc = None;
            self.enter_round(out);
        }
    }

    fn process_tc(&mut self, tc: TimeoutCertificate, out: &mut Vec<Action>) {
        self.process_qc(tc.high_qc.clone(), out);
        if self.pacemaker.on_tc(tc.round).is_some() {
            self.last_tc = Some(tc);
            self.enter_round(out);
        }
    }

    /// The 2-chain rule: a QC for `B` whose parent `P` has round `B.round - 1` commits `P`.
    fn try_commit(&mut self, qc: &QuorumCertificate, out: &mut Vec<Action>) {
        let Some(block) = self.tree.get(&qc.block()) else {
            return;
        };
        let parent = block.block.parent();
        let Some(parent_round) = self.tree.round_of(&parent) else {
            return;
        };
        if parent_round.checked_next() != Some(block.block.round)
            || parent_round <= self.tree.root().round
        {
            return;
        }
        if let Some(committed) = self.tree.commit(&parent) {
            self.stats.committed_blocks += committed.len() as u64;
            let root_round = self.tree.root().round;
            self.proposals_seen = self.proposals_seen.split_off(&root_round);
            self.pending.retain(|b| b.block.round > root_round);
            out.push(Action::Commit(committed));
        }
    }

    fn enter_round(&mut self, out: &mut Vec<Action>) {
        let round = self.round();
        let keep_from = Round(round.0.saturating_sub(1));
        self.votes.prune_below(keep_from);
        self.timeouts.prune_below(keep_from);
        out.push(Action::SetTimer {
            round,
            after_ms: self.pacemaker.timeout_ms(),
        });
        self.maybe_propose(out);
    }

    fn maybe_propose(&mut self, out: &mut Vec<Action>) {
        let round = self.round();
        if self.proposed_round == Some(round) || self.leader.leader(round) != self.config.me {
            return;
        }
        let parent = self.high_qc.block();
        let Some(parent_timestamp) = self.tree.timestamp_of(&parent) else {
            return; // fetch is in flight; propose when the parent arrives
        };
        let follows_qc = self.high_qc.round().checked_next() == Some(round);
        let earliest = parent_timestamp
            .0
            .saturating_add(self.config.min_block_interval_ms);
        if follows_qc && self.now.0 < earliest {
            out.push(Action::ProposeAfter {
                round,
                after_ms: earliest - self.now.0,
            });
            return;
        }
        let timeout_cert = match &self.last_tc {
            _ if follows_qc => None,
            Some(tc) if tc.round.checked_next() == Some(round) => Some(tc.clone()),
            _ => return,
        };
        let block = Block {
            epoch: self.committee.epoch(),
            round,
            author: self.config.me,
            parent_qc: self.high_qc.clone(),
            timeout_cert,
            payload: self.payload_source.pull(round, parent),
            timestamp: self.now.max(parent_timestamp),
        }
        .sign(self.safety.key(), self.config.chain_id);
        self.proposed_round = Some(round);
        self.stats.proposals += 1;
        out.push(Action::Broadcast(ConsensusMessage::Proposal(block)));
    }

    fn on_proposal(&mut self, block: SignedBlock, out: &mut Vec<Action>) -> Result<()> {
        self.process_qc(block.block.parent_qc.clone(), out);
        if let Some(tc) = &block.block.timeout_cert {
            self.process_tc(tc.clone(), out);
        }
        let round = block.block.round;
        let current = self.round();
        if round != current {
            // Not inserted: only the current round's leader may add an uncertified block, so a
            // faulty validator cannot fill the tree with old-round blocks. A certified one is
            // fetched when a QC names it.
            return Err(Error::Stale { round, current });
        }
        let leader = self.leader.leader(round);
        if block.block.author != leader {
            return Err(Error::NotLeader {
                round,
                author: block.block.author,
                leader,
            });
        }
        let digest = block.digest();
        match self.proposals_seen.get(&round) {
            Some(seen) if *seen != digest => {
                self.stats.equivocations += 1;
                return Err(Error::Unsafe(format!(
                    "leader {leader} equivocated in round {round}"
                )));
            }
            _ => {
                self.proposals_seen.insert(round, digest);
            }
        }
        if self.insert_block(block.clone(), out) {
            self.vote_for(&block, out)?;
        }
        Ok(())
    }

    /// Inserts a block, persisting it; a block with an unknown parent waits (bounded) while
    /// the parent is fetched. Returns whether the block is now in the tree.
    fn insert_block(&mut self, block: SignedBlock, out: &mut Vec<Action>) -> bool {
        match self.tree.insert(block.clone()) {
            InsertOutcome::Inserted => {
                out.push(Action::PersistBlock(block));
                true
            }
            InsertOutcome::Known => true,
            InsertOutcome::MissingParent(parent) => {
                let digest = block.digest();
                if self.pending.len() < self.config.max_pending
                    && !self.pending.iter().any(|b| b.digest() == digest)
                {
                    // Ask for the parent unless it is itself waiting for its own parent.
                    if !self.pending.iter().any(|b| b.digest() == parent) {
                        self.requested.insert(parent);
                        out.push(Action::FetchBlock {
                            digest: parent,
                            from: block.block.author,
                        });
                    }
                    self.pending.push(block);
                }
                false
            }
            InsertOutcome::Stale | InsertOutcome::Full => false,
        }
    }

    fn vote_for(&mut self, block: &SignedBlock, out: &mut Vec<Action>) -> Result<()> {
        let b = &block.block;
        let parent = b.parent();
        let parent_timestamp = self.tree.timestamp_of(&parent).unwrap_or_default();
        if b.timestamp < parent_timestamp {
            return Err(Error::Unsafe(format!(
                "block timestamp {} is before its parent's {parent_timestamp}",
                b.timestamp
            )));
        }
        if b.timestamp.0 > self.now.0.saturating_add(self.config.max_clock_drift_ms) {
            return Err(Error::Unsafe(format!(
                "block timestamp {} is more than {} ms ahead of this replica's clock {}",
                b.timestamp, self.config.max_clock_drift_ms, self.now
            )));
        }
        if !self.payload_validator.validate(b) {
            return Err(Error::Unsafe("payload refused".into()));
        }
        let parent_parent_round = self.tree.parent_round_of(&parent).unwrap_or_default();
        let vote = self.safety.vote(block, parent_parent_round)?;
        self.safety
            .record_certificates(&self.high_qc, self.last_tc.as_ref());
        self.stats.votes += 1;
        let next_leader = self.leader.leader(Round(b.round.0.saturating_add(1)));
        out.push(Action::PersistSafety {
            data: self.safety.data().clone(),
            then: vec![Action::Send {
                to: next_leader,
                message: ConsensusMessage::Vote(vote),
            }],
        });
        Ok(())
    }

    fn local_timeout(&mut self, out: &mut Vec<Action>) {
        let round = self.round();
        let timeout = match &self.last_timeout {
            Some(t) if t.round == round => Some(t.clone()),
            _ => {
                let entry_tc = self.last_tc.as_ref();
                match self.safety.timeout(round, &self.high_qc, entry_tc) {
                    Ok(t) => {
                        self.safety
                            .record_certificates(&self.high_qc, self.last_tc.as_ref());
                        self.stats.timeouts += 1;
                        self.last_timeout = Some(t.clone());
                        Some(t)
                    }
                    Err(_) => {
                        self.stats.dropped += 1;
                        None
                    }
                }
            }
        };
        if let Some(t) = timeout {
            let mut release = vec![Action::Broadcast(ConsensusMessage::Timeout(t))];
            // Replicas that missed how the previous round ended can catch up from its TC.
            if let Some(tc) = &self.last_tc {
                release.push(Action::Broadcast(ConsensusMessage::TimeoutCertificate(
                    tc.clone(),
                )));
            }
            out.push(Action::PersistSafety {
                data: self.safety.data().clone(),
                then: release,
            });
        }
        // Re-arm: if the round still does not end, the timeout is re-broadcast (lossy links).
        out.push(Action::SetTimer {
            round,
            after_ms: self.pacemaker.timeout_ms(),
        });
    }

    fn on_fetched(&mut self, mut blocks: Vec<SignedBlock>, out: &mut Vec<Action>) {
        // Keep only blocks asked for and their ancestors: each is certified (by the QC that
        // named it, or by its child's parent QC), so a reply cannot smuggle in other blocks.
        blocks.sort_by_key(|b| std::cmp::Reverse(b.block.round));
        let mut accepted = Vec::new();
        for block in blocks {
            let digest = block.digest();
            if self.requested.remove(&digest) {
                if !self.tree.contains(&block.block.parent()) {
                    self.requested.insert(block.block.parent());
                }
                accepted.push(block);
            }
        }
        if self.requested.len() > self.config.max_pending {
            // Bounded: forget the oldest wishes; they are asked for again when needed.
            self.requested.clear();
        }
        accepted.reverse();
        for block in accepted {
            self.insert_block(block, out);
        }
        // Pending blocks whose parent is now known join the tree, repeatedly.
        loop {
            let ready: Vec<SignedBlock> = {
                let tree = &self.tree;
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|b| tree.contains(&b.block.parent()));
                self.pending = waiting;
                ready
            };
            if ready.is_empty() {
                break;
            }
            for b in ready {
                let current_proposal = b.block.round == self.round()
                    && self.proposals_seen.get(&b.block.round) == Some(&b.digest());
                if self.insert_block(b.clone(), out) && current_proposal {
                    let _ = self.vote_for(&b, out);
                }
            }
        }
        let high_qc = self.high_qc.clone();
        self.try_commit(&high_qc, out);
        self.maybe_propose(out);
    }
}
