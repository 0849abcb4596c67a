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
//!   commit), then, if it is the current round leader's, votes for it if the safety rules
//!   allow and the payload validator accepts its payload, sending the vote to the leader of
//!   `r + 1`, which forms the QC and proposes on it.
//! - On timer expiry a replica broadcasts a signed timeout with its highest QC, and with it the
//!   vote it signed in the round, if any: when the next leader failed, every replica can still
//!   form the QC from those votes, so the round's block is certified rather than orphaned.
//!   More than 1/3 of the stake timing out makes the others time out too; 2/3 form a TC.
//! - Leaders come from the [`LeaderElection`] (reputation-based by default, computed from
//!   committed blocks, which the core feeds it as it commits). A proposal records the leaders
//!   of the rounds it skips ([`keel_types::Block::failed_leaders`], where its history decides
//!   them); a replica whose history decides a skipped round votes only if the leader named
//!   for it is the one its election names, so committed blocks are a checked record of failed
//!   leaders. Round timers adapt to round latency (see [`crate::pacemaker`]); a round that may
//!   wait for an idle leader's payload is allowed that wait.
//! - A QC for block `B` whose parent `P` is one round below `B` commits `P` and its ancestors.
//! - Pacing: a leader following a QC proposes no sooner than `min_block_interval_ms` after its
//!   parent; if it then has no payload, no uncommitted block below its parent carries any, and
//!   its QC did not just commit payload (the others learn that commit from its proposal), it
//!   waits up to `max_idle_wait_ms` more, ended early by [`Input::PayloadAvailable`]. A wait
//!   never applies after a TC (the round already failed once) and never delays committing
//!   ordered payload, so latency under load is unchanged while an idle chain slows down.
//! - Messages more than `max_future_rounds` ahead are dropped; blocks whose parent is unknown
//!   wait (bounded) while the parent is fetched (see [`block_sync`]).
//! - A core started without trustworthy safety data follows the chain but signs nothing, and
//!   asks peers for their certificates on start and on every round timer, until a quorum has
//!   answered (see [`crate::amnesia`] for the rules, `core/amnesia.rs` for the handling).
//!
//! Votes and timeouts are signed in `core/vote.rs`, block fetching is in [`block_sync`], the
//! amnesia guard's handling in `core/amnesia.rs`.
//!
//! The embedder-facing types live in [`crate::interface`] and are re-exported here; the cheap
//! checks an embedder runs before verifying a message are in [`crate::precheck`].

pub use crate::interface::{
    Action, CoreConfig, CoreDeps, CoreStats, EmptyPayload, Input, PayloadSource, PayloadValidator,
    RecoveryData,
};

mod amnesia;
pub mod block_sync;
mod vote;

use crate::{
    aggregator::{TimeoutAggregator, TimeoutOutcome, VoteAggregator, VoteOutcome},
    amnesia::AnswerTally,
    block_tree::{BlockTree, CommitRoot},
    error::{Error, Result},
    interface::PayloadLimit,
    leader::LeaderElection,
    message::{ConsensusMessage, Verified},
    pacemaker::Pacemaker,
    safety::{SafetyData, SafetyRules},
};
use block_sync::BlockSync;
use keel_types::{
    Block, Committee, Digest, QuorumCertificate, Round, SignedBlock, Timeout, TimeoutCertificate,
    TimestampMs, ValidatorIndex,
    consensus::{MAX_BLOCK_PAYLOAD, skipped_rounds},
};
use std::collections::BTreeMap;

/// The consensus state machine of one replica.
pub struct Core<L, P> {
    pub(crate) config: CoreConfig,
    me: ValidatorIndex,
    pub(crate) committee: Committee,
    pub(crate) leader: L,
    payload: P,
    safety: SafetyRules,
    pacemaker: Pacemaker,
    pub(crate) tree: BlockTree,
    pub(crate) high_qc: QuorumCertificate,
    last_tc: Option<TimeoutCertificate>,
    votes: VoteAggregator,
    timeouts: TimeoutAggregator,
    pub(crate) proposals_seen: BTreeMap<Round, Digest>,
    proposed_round: Option<Round>,
    /// The round in which this leader started waiting for payload (idle pacing).
    idle_wait: Option<Round>,
    /// Whether the last commit here included payload: the others learn of that commit only
    /// from the next proposal's QC, so the next proposal must not wait.
    committed_payload: bool,
    last_timeout: Option<Timeout>,
    pub(crate) sync: BlockSync,
    /// While amnesiac: the answers to certificate requests so far (see [`crate::amnesia`]).
    amnesia: Option<AnswerTally>,
    now: TimestampMs,
    stats: CoreStats,
}

impl<L: LeaderElection, P: PayloadSource + PayloadValidator> Core<L, P> {
    /// Builds the core from its deps, starting from their recovery data (genesis for a fresh
    /// replica). A `max_block_proofs` above the block payload limit is lowered to it (see
    /// [`CoreConfig::validate`] to refuse such a config instead).
    pub fn new(deps: CoreDeps<L, P>) -> Self {
        let CoreDeps {
            mut config,
            chain_id,
            me,
            committee,
            key,
            leader,
            payload,
            recovery,
        } = deps;
        config.max_block_proofs = config.max_block_proofs.min(MAX_BLOCK_PAYLOAD);
        let mut tree = BlockTree::new(recovery.root, config.max_blocks);
        let mut blocks = recovery.blocks;
        blocks.sort_by_key(|b| b.block.round);
        let genesis_qc = QuorumCertificate::genesis(committee.epoch(), chain_id);
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
        let pacemaker = Pacemaker::new(start, config.pacemaker, 2 * f, config.max_idle_wait_ms);
        let (safety, amnesia) = if recovery.amnesiac {
            // This replica's own certificates are its answer: they justify `start`.
            let own = AnswerTally::new(&committee, me, Round(start.0.saturating_sub(1)));
            let rules = SafetyRules::amnesiac(recovery.safety, key, me, chain_id);
            (rules, Some(own))
        } else {
            (SafetyRules::new(recovery.safety, key, me, chain_id), None)
        };
        Core {
            config,
            me,
            committee,
            leader,
            payload,
            safety,
            pacemaker,
            tree,
            high_qc,
            last_tc,
            votes: VoteAggregator::default(),
            timeouts: TimeoutAggregator::default(),
            proposals_seen: BTreeMap::new(),
            proposed_round: None,
            idle_wait: None,
            committed_payload: false,
            last_timeout: None,
            sync: BlockSync::default(),
            amnesia,
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

    /// The tunables this core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The leader election (who leads which round; reputations for metrics).
    pub fn election(&self) -> &L {
        &self.leader
    }

    /// The current round timeout in milliseconds (adapted base, back-off, idle allowance).
    pub fn timeout_ms(&self) -> u64 {
        self.pacemaker.timeout_ms()
    }

    /// The payload object (source of this replica's proposals, validator of others').
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// The payload object, mutably (e.g. to hand it proofs that became available).
    pub fn payload_mut(&mut self) -> &mut P {
        &mut self.payload
    }

    /// Handles one input at time `now`; returns the actions to carry out, in order.
    pub fn handle(&mut self, now: TimestampMs, input: Input) -> Vec<Action> {
        self.now = self.now.max(now);
        let mut out = Vec::new();
        let result = match input {
            Input::Start => {
                self.enter_round(&mut out);
                self.start_amnesia_guard(&mut out);
                Ok(())
            }
            Input::Timer { round } => {
                if round == self.round() {
                    if self.is_amnesiac() {
                        self.on_amnesiac_timer(&mut out);
                    } else {
                        self.local_timeout(&mut out);
                    }
                }
                Ok(())
            }
            Input::PeerCertificates { from, answer } => {
                self.on_peer_certificates(from, answer.into_inner(), &mut out)
            }
            Input::ProposeTimer { round } => {
                if round == self.round() {
                    self.maybe_propose(&mut out);
                }
                Ok(())
            }
            Input::PayloadAvailable => {
                if self.idle_wait == Some(self.round()) {
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
    /// a replica far behind catches up; [`crate::precheck`] lets far-ahead proposals, and
    /// far-ahead timeouts whose high QC would advance this replica, through for that reason);
    /// only what would be buffered is bounded.
    pub(crate) fn check_window(&self, round: Round) -> Result<()> {
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
        out.extend(self.sync.fetch_certified(&qc, &self.tree));
        self.try_commit(&qc, out);
        if self.pacemaker.on_qc(qc.round(), self.now).is_some() {
            self.last_tc = None;
            self.enter_round(out);
        }
    }

    fn process_tc(&mut self, tc: TimeoutCertificate, out: &mut Vec<Action>) {
        self.process_qc(tc.high_qc.clone(), out);
        if self.pacemaker.on_tc(tc.round, self.now).is_some() {
            self.stats.failed_rounds += 1;
            self.last_tc = Some(tc);
            self.enter_round(out);
        }
    }

    /// The 2-chain rule: a QC for `B` whose parent `P` has round `B.round - 1` commits `P`.
    pub(crate) fn try_commit(&mut self, qc: &QuorumCertificate, out: &mut Vec<Action>) {
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
            for block in &committed {
                self.leader.on_commit(block);
            }
            self.stats.committed_blocks += committed.len() as u64;
            self.committed_payload = committed.iter().any(|c| !c.block.block.payload.is_empty());
            let root_round = self.tree.root().round;
            self.proposals_seen = self.proposals_seen.split_off(&root_round);
            self.sync.prune(root_round);
            out.push(Action::Commit(committed));
        }
    }

    fn enter_round(&mut self, out: &mut Vec<Action>) {
        let round = self.round();
        let keep_from = Round(round.0.saturating_sub(1));
        self.votes.prune_below(keep_from);
        self.timeouts.prune_below(keep_from);
        // Entered on a QC with nothing ordered awaiting commit: this round's leader may wait
        // for payload (the leader itself enters here before it waits), so the timer allows
        // for that wait however short the adapted timeout is.
        if self.config.max_idle_wait_ms > 0
            && self.high_qc.round().checked_next() == Some(round)
            && !self.committed_payload
            && !self.tree.uncommitted_payload(&self.high_qc.block())
        {
            self.pacemaker.mark_idle(self.now);
        }
        out.push(Action::SetTimer {
            round,
            after_ms: self.pacemaker.timeout_ms(),
        });
        self.maybe_propose(out);
    }

    pub(crate) fn maybe_propose(&mut self, out: &mut Vec<Action>) {
        let round = self.round();
        if self.proposed_round == Some(round)
            || self.leader.leader(round) != self.me
            || self.safety.check_proposal(round).is_err()
        {
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
        // Idle pacing: nothing to order, nothing ordered awaiting commit, and no commit of
        // payload that the others learn only from this proposal's QC: wait (once per round)
        // for payload; `Input::PayloadAvailable` or the timer ends the wait.
        if follows_qc
            && self.config.max_idle_wait_ms > 0
            && self.idle_wait != Some(round)
            && !self.payload.has_payload()
            && !self.committed_payload
            && !self.tree.uncommitted_payload(&parent)
        {
            self.idle_wait = Some(round);
            out.push(Action::ProposeAfter {
                round,
                after_ms: self.config.max_idle_wait_ms,
            });
            return;
        }
        let timeout_cert = match &self.last_tc {
            _ if follows_qc => None,
            Some(tc) if tc.round.checked_next() == Some(round) => Some(tc.clone()),
            _ => return,
        };
        let (max, max_bytes) = (self.config.max_block_proofs, self.config.max_block_bytes);
        let timestamp = self.now.max(parent_timestamp);
        let limit = PayloadLimit {
            proofs: max,
            bytes: max_bytes,
            timestamp,
        };
        let mut payload = self.payload.pull(round, parent, limit);
        payload.truncate(max);
        // A source that returned more bytes than asked: keep the prefix within the limit.
        let mut bytes = 0u64;
        payload.retain(|p| {
            bytes = bytes.saturating_add(p.info.num_bytes);
            bytes <= max_bytes
        });
        let failed_leaders = skipped_rounds(self.high_qc.round(), round)
            .map(|r| self.leader.is_final(r).then(|| self.leader.leader(r)))
            .collect();
        let block = Block {
            epoch: self.committee.epoch(),
            round,
            author: self.me,
            parent_qc: self.high_qc.clone(),
            timeout_cert,
            failed_leaders,
            payload,
            timestamp,
        };
        let Ok(block) = self.safety.sign_proposal(block) else {
            return; // not reached: check_proposal passed above and nothing changed since
        };
        self.proposed_round = Some(round);
        self.stats.proposals += 1;
        out.push(Action::PersistSafety {
            data: self.safety.data().clone(),
            then: vec![Action::Broadcast(ConsensusMessage::Proposal(block))],
        });
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
}
