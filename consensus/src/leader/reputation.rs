//! Reputation-based leader election, computed from committed history only.
//!
//! The leader of round `r` is drawn from the committed blocks of rounds up to the *anchor*
//! `r - exclude_rounds` (newer rounds may not be committed everywhere yet):
//! 1. **Windows.** The proposer window is the last `proposer_window_per_validator x n`
//!    committed blocks up to the anchor; the voter window the last `voter_window_per_validator
//!    x n`. In the proposer window a validator *proposed* each block it authored and *failed*
//!    each round a block records it as the failed leader of ([`keel_types::Block::failed_leaders`],
//!    checked by those of that block's voters whose history decides the round); in the voter
//!    window it *voted* for each block whose parent QC it signed.
//! 2. **Weights.** A validator whose failures exceed `failure_threshold_percent` of its leader
//!    rounds (proposed + failed) in the window weighs `failed_weight`; otherwise one that
//!    proposed or voted weighs `active_weight`; otherwise `inactive_weight`. Each weight is
//!    multiplied by the validator's stake. Every weight is positive, so every validator keeps a
//!    chance and one that returns is seen voting and regains its turns.
//! 3. **Draw.** The leader is drawn in proportion to the weights, seeded by the hash of (epoch,
//!    round, height of the last block up to the anchor). The seed is committed data a proposer
//!    cannot choose among many values (a block digest could be varied through the timestamp);
//!    all a leader can do is withhold its block, which shifts later heights by one.
//! 4. **Finality.** A replica whose history is complete (it has seen every committed block
//!    the windows need: since genesis, or at least [`Reputation::history_len`] in a row) and
//!    that has committed a block at round `r - exclude_rounds` or above holds every committed
//!    block up to the anchor, so every such replica computes the same leader for `r`. One that
//!    has not (it lags, it restarted on a pruned store or joined by state sync, or commits
//!    have stalled for more than `exclude_rounds` rounds everywhere) uses the stake-weighted
//!    round robin instead: in a stall every replica does, so they agree again, and each
//!    honest validator gets its turns. Rounds at or below the last commit are not asked for
//!    (their window may have been trimmed).
//!
//! Bounded: the history keeps the [`Reputation::history_len`] most recent committed blocks,
//! each with at most [`keel_types::MAX_FAILED_LEADERS`] failed leaders and a committee's worth
//! of voters.

use super::{ElectionConfig, LeaderElection, WeightedRoundRobin};
use crate::block_tree::CommittedBlock;
use keel_types::{Committee, Digest, Epoch, Height, Round, ValidatorIndex};
use serde::Serialize;
use std::{cell::RefCell, collections::VecDeque};

/// What the election remembers of a committed block.
#[derive(Debug, Clone)]
struct Entry {
    round: Round,
    height: Height,
    author: ValidatorIndex,
    /// Signers of the block's parent QC.
    voters: Vec<ValidatorIndex>,
    /// Leaders of the rounds the block skipped.
    failed: Vec<ValidatorIndex>,
}

/// One validator's standing when a round's leader is drawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatorReputation {
    /// The validator.
    pub validator: ValidatorIndex,
    /// Blocks it proposed in the proposer window.
    pub proposed: u32,
    /// Rounds it failed as leader in the proposer window.
    pub failed: u32,
    /// Parent QCs it signed in the voter window.
    pub voted: u32,
    /// Its weight before stake is applied.
    pub weight: u64,
}

/// Reputation-based election (see the module documentation).
#[derive(Debug, Clone)]
pub struct Reputation {
    epoch: Epoch,
    stakes: Vec<u64>,
    config: ElectionConfig,
    proposer_window: usize,
    voter_window: usize,
    fallback: WeightedRoundRobin,
    /// Committed blocks of this epoch, ascending height (hence ascending round).
    history: VecDeque<Entry>,
    /// Round of the last committed block seen (the epoch's genesis: 0).
    committed_round: Round,
    /// Height of the last committed block seen (the epoch's genesis: 0).
    committed_height: Height,
    /// The lowest height from which this election has seen every committed block up to
    /// `committed_height` (1: since genesis).
    seen_from: Height,
    /// The last weighted draw's window, by the height of its last block: the weights are the
    /// same for every round anchored there (the precheck asks for leaders of any round).
    cache: RefCell<Option<(Height, Vec<u128>)>>,
}

impl Reputation {
    /// The election for `committee` with no history (the start of an epoch; a restarted
    /// replica then feeds it its recent committed blocks).
    pub fn new(committee: &Committee, config: ElectionConfig) -> Self {
        let n = committee.size().max(1);
        Reputation {
            epoch: committee.epoch(),
            stakes: committee.validators().iter().map(|v| v.stake.0).collect(),
            proposer_window: config
                .proposer_window_per_validator
                .saturating_mul(n)
                .max(1),
            voter_window: config.voter_window_per_validator.saturating_mul(n).max(1),
            config,
            fallback: WeightedRoundRobin::new(committee),
            history: VecDeque::new(),
            committed_round: Round(0),
            committed_height: Height(0),
            seen_from: Height(1),
            cache: RefCell::new(None),
        }
    }

    /// Feeds a rebuilt election (after a restart, or range sync) the committed chain up to
    /// `root`: `recent` are the last committed blocks the store holds, in height order,
    /// ideally [`Reputation::history_len`] of them. Fewer (pruned, or the node joined by state
    /// sync) leave the history incomplete: the election is not final, and uses round robin,
    /// until enough blocks are committed.
    pub fn recover(&mut self, root: Height, recent: &[CommittedBlock]) {
        if let Some(first) = recent.first() {
            // Contiguous from here, as far as this election knows.
            self.committed_height = Height(first.height.0.saturating_sub(1));
            self.seen_from = first.height;
        }
        for b in recent {
            self.on_commit(b);
        }
        if self.committed_height != root {
            self.forget(root);
        }
    }

    /// Whether the history holds every committed block the windows may need.
    fn complete(&self) -> bool {
        self.seen_from.0 <= 1
            || self.committed_height.0.saturating_sub(self.seen_from.0) + 1
                >= self.history_len() as u64
    }

    /// A gap in the committed chain seen here: start over from `height`.
    fn forget(&mut self, height: Height) {
        self.history.clear();
        self.cache.replace(None);
        self.committed_height = height;
        self.seen_from = Height(height.0.saturating_add(1));
    }

    /// How many of the most recent committed blocks the election keeps and needs: the
    /// windows, plus at most one block per excluded round above the anchor.
    pub fn history_len(&self) -> usize {
        let excluded = usize::try_from(self.config.exclude_rounds).unwrap_or(usize::MAX);
        self.proposer_window
            .max(self.voter_window)
            .saturating_add(excluded)
    }

    /// The round whose committed history decides `round`'s leader.
    fn anchor(&self, round: Round) -> Round {
        Round(round.0.saturating_sub(self.config.exclude_rounds))
    }

    /// The committed blocks up to `round`'s anchor (a suffix of them: those kept).
    fn known_up_to_anchor(&self, round: Round) -> impl DoubleEndedIterator<Item = &Entry> {
        let anchor = self.anchor(round);
        let end = self.history.partition_point(|e| e.round <= anchor);
        self.history.range(..end)
    }

    /// Every validator's standing for `round` (see rules 1 and 2).
    pub fn reputations(&self, round: Round) -> Vec<ValidatorReputation> {
        let n = self.stakes.len();
        let mut out: Vec<ValidatorReputation> = (0..n)
            .map(|i| ValidatorReputation {
                validator: ValidatorIndex(i as u32),
                proposed: 0,
                failed: 0,
                voted: 0,
                weight: 0,
            })
            .collect();
        for e in self
            .known_up_to_anchor(round)
            .rev()
            .take(self.proposer_window)
        {
            if let Some(r) = out.get_mut(e.author.as_usize()) {
                r.proposed += 1;
            }
            for f in &e.failed {
                if let Some(r) = out.get_mut(f.as_usize()) {
                    r.failed += 1;
                }
            }
        }
        for e in self.known_up_to_anchor(round).rev().take(self.voter_window) {
            for v in &e.voters {
                if let Some(r) = out.get_mut(v.as_usize()) {
                    r.voted += 1;
                }
            }
        }
        let c = &self.config;
        for r in &mut out {
            let turns = u64::from(r.proposed) + u64::from(r.failed);
            r.weight = if u64::from(r.failed) * 100 > c.failure_threshold_percent * turns {
                c.failed_weight
            } else if r.proposed > 0 || r.voted > 0 {
                c.active_weight
            } else {
                c.inactive_weight
            };
        }
        out
    }

    /// Rule 3: the weighted draw for `round` (final or not).
    fn draw(&self, round: Round) -> ValidatorIndex {
        let anchor_height = self
            .known_up_to_anchor(round)
            .next_back()
            .map_or(Height(0), |e| e.height);
        let cached = match &*self.cache.borrow() {
            Some((h, w)) if *h == anchor_height => Some(w.clone()),
            _ => None,
        };
        let weights = cached.unwrap_or_else(|| {
            let w: Vec<u128> = self
                .reputations(round)
                .iter()
                .zip(&self.stakes)
                .map(|(r, stake)| u128::from(r.weight) * u128::from(*stake))
                .collect();
            self.cache.replace(Some((anchor_height, w.clone())));
            w
        });
        let total: u128 = weights.iter().sum();
        if total == 0 {
            return self.fallback.leader(round);
        }
        let seed = Digest::of_tagged("keel/leader-seed", &(self.epoch, round, anchor_height));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&seed.0[..16]);
        let mut point = u128::from_le_bytes(bytes) % total;
        for (i, w) in weights.iter().enumerate() {
            if point < *w {
                return ValidatorIndex(i as u32);
            }
            point -= w;
        }
        self.fallback.leader(round) // not reached: point < total
    }
}

impl LeaderElection for Reputation {
    fn leader(&self, round: Round) -> ValidatorIndex {
        if self.is_final(round) {
            self.draw(round)
        } else {
            self.fallback.leader(round)
        }
    }

    fn is_final(&self, round: Round) -> bool {
        self.complete() && self.committed_round >= self.anchor(round)
    }

    fn on_commit(&mut self, block: &CommittedBlock) {
        let b = &block.block.block;
        if b.epoch != self.epoch || block.height <= self.committed_height {
            return;
        }
        if block.height.0 != self.committed_height.0 + 1 {
            // A gap (nothing a core delivers; a store missing heights could): the history
            // must be complete again before it decides anything.
            self.forget(Height(block.height.0 - 1));
        }
        self.committed_height = block.height;
        self.committed_round = b.round;
        self.history.push_back(Entry {
            round: b.round,
            height: block.height,
            author: b.author,
            voters: b
                .parent_qc
                .signatures
                .signatures()
                .iter()
                .map(|(v, _)| *v)
                .collect(),
            failed: b.failed_leaders.iter().flatten().copied().collect(),
        });
        while self.history.len() > self.history_len() {
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::{DEFAULT_ACTIVE_WEIGHT, DEFAULT_EXCLUDE_ROUNDS, DEFAULT_INACTIVE_WEIGHT};
    use keel_types::{
        Block, MultiSignature, QuorumCertificate, Signature, SignedBlock, TimestampMs, VoteData,
        test_utils::committee_with_stakes,
    };

    /// A committed block at `round` by `author`, whose parent QC `voters` signed, recording
    /// `failed` leaders (signatures are not checked here).
    fn committed(
        height: u64,
        round: u64,
        author: u32,
        voters: &[u32],
        failed: &[u32],
    ) -> CommittedBlock {
        let qc = QuorumCertificate {
            data: VoteData {
                epoch: Epoch(1),
                round: Round(round - 1 - failed.len() as u64),
                block: Digest::of_bytes(&round.to_le_bytes()),
            },
            signatures: MultiSignature::from_raw(
                voters
                    .iter()
                    .map(|v| (ValidatorIndex(*v), Signature([0; 64])))
                    .collect(),
            ),
        };
        CommittedBlock {
            height: Height(height),
            block: SignedBlock {
                block: Block {
                    epoch: Epoch(1),
                    round: Round(round),
                    author: ValidatorIndex(author),
                    parent_qc: qc,
                    timeout_cert: None,
                    failed_leaders: failed.iter().map(|f| Some(ValidatorIndex(*f))).collect(),
                    payload: vec![],
                    timestamp: TimestampMs(round),
                },
                signature: Signature([0; 64]),
            },
        }
    }

    fn election(stakes: &[u64]) -> Reputation {
        let (c, _) = committee_with_stakes(Epoch(1), stakes);
        Reputation::new(&c, ElectionConfig::default())
    }

    /// Feeds the election `rounds` rounds in which every validator proposes when drawn and
    /// votes, except `down`, which does neither (each of its turns fails and the next block
    /// records it). Returns how many rounds each validator was drawn for from round
    /// `count_from` on.
    fn run(e: &mut Reputation, rounds: u64, down: Option<u32>, count_from: u64) -> Vec<usize> {
        let n = e.stakes.len() as u32;
        let mut height = e.committed_height.0;
        let mut failed = vec![];
        let mut turns = vec![0; n as usize];
        for round in e.committed_round.0 + 1..=rounds {
            let leader = e.leader(Round(round)).0;
            if round >= count_from {
                turns[leader as usize] += 1;
            }
            if Some(leader) == down {
                failed.push(leader);
                continue;
            }
            height += 1;
            let voters: Vec<u32> = (0..n).filter(|v| Some(*v) != down).collect();
            e.on_commit(&committed(height, round, leader, &voters, &failed));
            failed.clear();
        }
        turns
    }

    #[test]
    fn a_validator_that_fails_its_turns_loses_them() {
        let mut e = election(&[1, 1, 1, 1]);
        let late = run(&mut e, 2_000, Some(2), 1_000)[2];
        assert!(
            late < 15,
            "the crashed validator still led {late} of rounds 1000..2000"
        );
        let r = e.reputations(Round(2_001));
        assert!(r[2].weight <= DEFAULT_INACTIVE_WEIGHT, "{r:?}");
        assert_eq!(r[0].weight, DEFAULT_ACTIVE_WEIGHT);
    }

    #[test]
    fn healthy_validators_share_the_rounds_by_stake() {
        let mut e = election(&[2, 1, 1, 1]);
        let led = run(&mut e, 4_100, None, 101);
        // Expected 1,600 / 800 / 800 / 800.
        assert!((1_450..1_750).contains(&led[0]), "{led:?}");
        for l in &led[1..] {
            assert!((700..900).contains(l), "{led:?}");
        }
    }

    #[test]
    fn a_returning_validator_regains_its_turns_once_it_votes() {
        let mut e = election(&[1, 1, 1, 1]);
        run(&mut e, 300, Some(3), 0);
        assert!(e.reputations(Round(301))[3].weight < DEFAULT_ACTIVE_WEIGHT);
        let turns = run(&mut e, 1_300, None, 800);
        assert_eq!(e.reputations(Round(1_301))[3].weight, DEFAULT_ACTIVE_WEIGHT);
        assert!(turns[3] > 80, "validator 3 is back but led only {turns:?}");
    }

    #[test]
    fn only_history_up_to_the_anchor_counts_and_beyond_it_is_not_final() {
        let mut e = election(&[1, 1, 1, 1]);
        run(&mut e, 50, None, 0);
        let before = e.leader(Round(60));
        assert!(e.is_final(Round(60)));
        assert!(!e.is_final(Round(61)));
        // A block above round 60's anchor (50) changes nothing for round 60.
        e.on_commit(&committed(51, 55, 1, &[1], &[0, 0, 0, 0]));
        assert_eq!(e.leader(Round(60)), before);
        // Not final: the round-robin fallback.
        assert_eq!(e.leader(Round(100)), e.fallback.leader(Round(100)));
    }

    #[test]
    fn history_is_bounded() {
        let mut e = election(&[1, 1, 1, 1]);
        run(&mut e, 5_000, None, 0);
        assert_eq!(e.history.len(), e.history_len());
    }

    #[test]
    fn a_replica_fed_only_the_recent_history_agrees() {
        let mut full = election(&[1, 2, 1, 1, 3]);
        run(&mut full, 600, Some(4), 0);
        let as_blocks = |entries: &[Entry]| -> Vec<CommittedBlock> {
            entries
                .iter()
                .map(|e| {
                    committed(
                        e.height.0,
                        e.round.0,
                        e.author.0,
                        &e.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
                        &e.failed.iter().map(|v| v.0).collect::<Vec<_>>(),
                    )
                })
                .collect()
        };
        let recent: Vec<Entry> = full.history.iter().cloned().collect();
        let root = full.committed_height;
        let mut restarted = election(&[1, 2, 1, 1, 3]);
        restarted.recover(root, &as_blocks(&recent));
        let last = full.committed_round.0;
        for r in last + 1..=last + DEFAULT_EXCLUDE_ROUNDS {
            assert!(restarted.is_final(Round(r)));
            assert_eq!(full.reputations(Round(r)), restarted.reputations(Round(r)));
            assert_eq!(
                full.leader(Round(r)),
                restarted.leader(Round(r)),
                "round {r}"
            );
        }
        // Fed too little (a pruned store): not final, round robin, until enough commits.
        let mut short = election(&[1, 2, 1, 1, 3]);
        short.recover(root, &as_blocks(&recent[recent.len() - 5..]));
        assert!(!short.is_final(Round(last + 1)));
        assert_eq!(
            short.leader(Round(last + 1)),
            short.fallback.leader(Round(last + 1))
        );
        run(&mut short, last + 100, None, 0);
        assert!(short.is_final(Round(last + 101)));
        // Nothing fed at all, or a gap: the same.
        let mut empty = election(&[1, 2, 1, 1, 3]);
        empty.recover(root, &[]);
        assert!(!empty.is_final(Round(last + 1)));
        let mut gap = election(&[1, 2, 1, 1, 3]);
        let mut with_gap = as_blocks(&recent);
        with_gap.remove(with_gap.len() / 2);
        gap.recover(root, &with_gap);
        assert!(!gap.is_final(Round(last + 1)));
    }
}
