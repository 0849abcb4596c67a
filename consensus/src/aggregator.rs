//! Vote and timeout aggregation into QCs and TCs, without I/O.
//!
//! Rules:
//! - Only verified votes and timeouts arrive here; each signer counts once per round.
//! - A signer voting for two blocks in one round is reported as [`VoteOutcome::Equivocation`]
//!   and only its first vote counts.
//! - A QC forms the first time a block's voters pass 2/3 of the stake; a TC the first time a
//!   round's timeout signers do. Later votes or timeouts for that round change nothing.
//! - Rounds are kept only inside a window the core maintains ([`VoteAggregator::prune_below`]),
//!   so a flood of future-round messages cannot grow memory without bound.

use keel_types::{
    Committee, Digest, MultiSignature, QuorumCertificate, Round, Signature, Timeout,
    TimeoutCertificate, ValidatorIndex, Vote, VoteData,
};
use std::collections::{BTreeMap, HashMap};

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted; no QC yet.
    Added,
    /// Already counted, or the round already has its QC.
    Duplicate,
    /// The signer already voted for another block in this round; ignored.
    Equivocation {
        /// The equivocating validator.
        author: ValidatorIndex,
    },
    /// This vote completed a QC.
    NewQc(QuorumCertificate),
}

/// Votes for one block: their stake, signatures and the data signed.
struct BlockVotes {
    stake: u64,
    signatures: Vec<(ValidatorIndex, Signature)>,
    data: VoteData,
}

#[derive(Default)]
struct RoundVotes {
    voted: HashMap<ValidatorIndex, Digest>,
    by_block: HashMap<Digest, BlockVotes>,
    certified: bool,
}

/// Collects votes into QCs.
#[derive(Default)]
pub struct VoteAggregator {
    rounds: BTreeMap<Round, RoundVotes>,
}

impl VoteAggregator {
    /// Adds a verified vote.
    pub fn add(&mut self, vote: &Vote, committee: &Committee) -> VoteOutcome {
        let round = self.rounds.entry(vote.data.round).or_default();
        if round.certified {
            return VoteOutcome::Duplicate;
        }
        match round.voted.get(&vote.author) {
            Some(d) if *d == vote.data.block => return VoteOutcome::Duplicate,
            Some(_) => {
                return VoteOutcome::Equivocation {
                    author: vote.author,
                };
            }
            None => {}
        }
        round.voted.insert(vote.author, vote.data.block);
        let entry = round
            .by_block
            .entry(vote.data.block)
            .or_insert_with(|| BlockVotes {
                stake: 0,
                signatures: Vec::new(),
                data: vote.data,
            });
        entry.stake = entry.stake.saturating_add(committee.stake(vote.author));
        entry.signatures.push((vote.author, vote.signature));
        if committee.is_quorum(entry.stake) {
            round.certified = true;
            let qc = QuorumCertificate {
                data: entry.data,
                signatures: MultiSignature::from_signatures(std::mem::take(&mut entry.signatures)),
            };
            return VoteOutcome::NewQc(qc);
        }
        VoteOutcome::Added
    }

    /// Forgets rounds below `round`.
    pub fn prune_below(&mut self, round: Round) {
        self.rounds = self.rounds.split_off(&round);
    }

    /// Rounds currently buffered.
    pub fn buffered_rounds(&self) -> usize {
        self.rounds.len()
    }
}

/// What adding a timeout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeoutOutcome {
    /// Counted. `validity` is true once signers hold more than 1/3 of the stake.
    Added {
        /// More than 1/3 of the stake timed out this round.
        validity: bool,
    },
    /// Already counted, or the round already has its TC.
    Duplicate,
    /// This timeout completed a TC.
    NewTc(TimeoutCertificate),
}

#[derive(Default)]
struct RoundTimeouts {
    signers: BTreeMap<ValidatorIndex, (Round, Signature)>,
    stake: u64,
    high_qc: Option<QuorumCertificate>,
    certified: bool,
}

/// Collects timeouts into TCs.
#[derive(Default)]
pub struct TimeoutAggregator {
    rounds: BTreeMap<Round, RoundTimeouts>,
}

impl TimeoutAggregator {
    /// Adds a verified timeout.
    pub fn add(&mut self, timeout: &Timeout, committee: &Committee) -> TimeoutOutcome {
        let round = self.rounds.entry(timeout.round).or_default();
        if round.certified || round.signers.contains_key(&timeout.author) {
            return TimeoutOutcome::Duplicate;
        }
        round
            .signers
            .insert(timeout.author, (timeout.high_qc.round(), timeout.signature));
        round.stake = round.stake.saturating_add(committee.stake(timeout.author));
        if round
            .high_qc
            .as_ref()
            .is_none_or(|q| q.round() < timeout.high_qc.round())
        {
            round.high_qc = Some(timeout.high_qc.clone());
        }
        if committee.is_quorum(round.stake)
            && let Some(high_qc) = round.high_qc.clone()
        {
            round.certified = true;
            return TimeoutOutcome::NewTc(TimeoutCertificate {
                epoch: timeout.epoch,
                round: timeout.round,
                high_qc,
                signatures: round
                    .signers
                    .iter()
                    .map(|(i, (r, s))| (*i, *r, *s))
                    .collect(),
            });
        }
        TimeoutOutcome::Added {
            validity: committee.is_validity(round.stake),
        }
    }

    /// Forgets rounds below `round`.
    pub fn prune_below(&mut self, round: Round) {
        self.rounds = self.rounds.split_off(&round);
    }

    /// Rounds currently buffered.
    pub fn buffered_rounds(&self) -> usize {
        self.rounds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{ChainId, Epoch, test_utils::committee};

    const CHAIN: ChainId = ChainId(1);

    fn vote(i: u32, keys: &[keel_types::KeyPair], block: &[u8]) -> Vote {
        Vote::new(
            VoteData {
                epoch: Epoch(1),
                round: Round(3),
                block: Digest::of_bytes(block),
            },
            ValidatorIndex(i),
            &keys[i as usize],
            CHAIN,
        )
    }

    #[test]
    fn forms_a_verifiable_qc_at_quorum_and_flags_equivocation() {
        let (c, keys) = committee(4);
        let mut agg = VoteAggregator::default();
        assert_eq!(agg.add(&vote(0, &keys, b"a"), &c), VoteOutcome::Added);
        assert_eq!(agg.add(&vote(0, &keys, b"a"), &c), VoteOutcome::Duplicate);
        assert_eq!(
            agg.add(&vote(0, &keys, b"b"), &c),
            VoteOutcome::Equivocation {
                author: ValidatorIndex(0)
            }
        );
        assert_eq!(agg.add(&vote(1, &keys, b"b"), &c), VoteOutcome::Added);
        assert_eq!(agg.add(&vote(2, &keys, b"a"), &c), VoteOutcome::Added);
        match agg.add(&vote(3, &keys, b"a"), &c) {
            VoteOutcome::NewQc(qc) => {
                assert_eq!(qc.verify(&c, CHAIN), Ok(()));
                assert_eq!(qc.signatures.len(), 3);
            }
            other => panic!("expected a QC, got {other:?}"),
        }
        agg.prune_below(Round(4));
        assert_eq!(agg.buffered_rounds(), 0);
    }

    proptest::proptest! {
        /// Whatever the order, duplicates and equivocations, a QC forms exactly when the first
        /// votes of distinct signers for one block reach a quorum, and it verifies.
        #[test]
        fn qc_forms_exactly_at_quorum(votes in proptest::collection::vec((0u32..7, proptest::bool::ANY), 0..30)) {
            let (c, keys) = committee(7);
            let mut agg = VoteAggregator::default();
            let mut first: HashMap<u32, bool> = HashMap::new();
            let mut formed = None;
            for (author, which) in votes {
                let block: &[u8] = if which { b"a" } else { b"b" };
                first.entry(author).or_insert(which);
                let outcome = agg.add(&vote(author, &keys, block), &c);
                if let VoteOutcome::NewQc(qc) = outcome {
                    proptest::prop_assert!(formed.is_none(), "two QCs in one round");
                    proptest::prop_assert_eq!(qc.verify(&c, CHAIN), Ok(()));
                    formed = Some(qc.data.block);
                }
            }
            let for_a = first.values().filter(|w| **w).count() as u64;
            let for_b = first.values().filter(|w| !**w).count() as u64;
            let expect = if c.is_quorum(for_a) {
                Some(Digest::of_bytes(b"a"))
            } else if c.is_quorum(for_b) {
                Some(Digest::of_bytes(b"b"))
            } else {
                None
            };
            proptest::prop_assert_eq!(formed, expect);
        }
    }

    #[test]
    fn forms_a_verifiable_tc_with_the_highest_qc() {
        let (c, keys) = committee(4);
        let mut agg = TimeoutAggregator::default();
        let genesis = QuorumCertificate::genesis(Epoch(1), CHAIN);
        let t = |i: u32| {
            Timeout::new(
                Epoch(1),
                Round(1),
                genesis.clone(),
                ValidatorIndex(i),
                &keys[i as usize],
                CHAIN,
            )
        };
        assert_eq!(
            agg.add(&t(0), &c),
            TimeoutOutcome::Added { validity: false }
        );
        assert_eq!(agg.add(&t(1), &c), TimeoutOutcome::Added { validity: true });
        assert_eq!(agg.add(&t(1), &c), TimeoutOutcome::Duplicate);
        match agg.add(&t(3), &c) {
            TimeoutOutcome::NewTc(tc) => assert_eq!(tc.verify(&c, CHAIN), Ok(())),
            other => panic!("expected a TC, got {other:?}"),
        }
    }
}
