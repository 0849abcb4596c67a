//! Property test of the safety rules alone: whatever sequence of proposals and timeouts they are
//! asked to sign, they never sign votes for two blocks in one round, never vote in a round they
//! timed out in, and never let the recorded rounds go back.

use keel_consensus::{SafetyData, SafetyRules};
use keel_types::{
    Block, ChainId, Epoch, QuorumCertificate, Round, TimeoutCertificate, TimestampMs,
    ValidatorIndex, test_utils::committee,
};
use proptest::prelude::*;
use std::collections::HashMap;

const CHAIN: ChainId = ChainId(1);

fn qc(round: u64) -> QuorumCertificate {
    let mut qc = QuorumCertificate::genesis(Epoch(1), CHAIN);
    qc.data.round = Round(round);
    qc
}

#[derive(Debug, Clone)]
enum Ask {
    /// Vote for a block at `round` on a QC of `qc_round`, variant `tag`, maybe with a TC.
    Vote {
        round: u64,
        qc_round: u64,
        tag: u8,
        tc: Option<(u64, u64)>,
    },
    /// Time out `round` with a high QC of `qc_round`, maybe entered through a TC.
    Timeout {
        round: u64,
        qc_round: u64,
        tc: Option<u64>,
    },
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        (
            1u64..12,
            0u64..12,
            0u8..3,
            prop::option::of((0u64..12, 0u64..12))
        )
            .prop_map(|(round, q, tag, tc)| Ask::Vote {
                round,
                qc_round: q.min(round - 1),
                tag,
                tc
            }),
        (1u64..12, 0u64..12, prop::option::of(0u64..12)).prop_map(|(round, q, tc)| Ask::Timeout {
            round,
            qc_round: q.min(round - 1),
            tc
        }),
    ]
}

proptest! {
    #[test]
    fn safety_rules_never_sign_conflicting_messages(asks in prop::collection::vec(ask(), 1..60)) {
        let (_, mut keys) = committee(4);
        let signer = keys.remove(1);
        let proposer = keys.remove(0);
        let mut rules = SafetyRules::new(
            SafetyData { epoch: Epoch(1), ..Default::default() },
            signer,
            ValidatorIndex(1),
            CHAIN,
        );
        let mut voted: HashMap<u64, keel_types::Digest> = HashMap::new();
        let mut timed_out: Vec<u64> = Vec::new();
        let mut last = SafetyData::default();
        for a in asks {
            match a {
                Ask::Vote { round, qc_round, tag, tc } => {
                    let tc = tc.map(|(r, h)| TimeoutCertificate {
                        epoch: Epoch(1),
                        round: Round(r),
                        high_qc: qc(h.min(r.saturating_sub(1))),
                        signatures: vec![],
                    });
                    let block = Block {
                        epoch: Epoch(1),
                        round: Round(round),
                        author: ValidatorIndex(0),
                        parent_qc: qc(qc_round),
                        timeout_cert: tc,
                        failed_leaders: vec![],
                        payload: vec![],
                        timestamp: TimestampMs(u64::from(tag)),
                    }
                    .sign(&proposer, CHAIN);
                    // The side-effect-free check agrees with signing, and changes nothing.
                    let before = rules.data().clone();
                    let allowed = rules.check_vote(&block).is_ok();
                    prop_assert_eq!(rules.data(), &before);
                    let signed = rules.vote(&block, Round(0));
                    prop_assert_eq!(allowed, signed.is_ok(), "check_vote disagrees with vote in round {}", round);
                    if let Ok(vote) = signed {
                        prop_assert_eq!(vote.data.round, Round(round));
                        match voted.insert(round, vote.data.block) {
                            // Re-sending the vote already signed in this round is allowed.
                            Some(prev) => prop_assert_eq!(prev, vote.data.block, "two votes in round {}", round),
                            // A new vote is never signed in a round already timed out.
                            None => prop_assert!(!timed_out.contains(&round), "voted in timed-out round {}", round),
                        }
                    }
                }
                Ask::Timeout { round, qc_round, tc } => {
                    let tc = tc.map(|r| TimeoutCertificate {
                        epoch: Epoch(1),
                        round: Round(r),
                        high_qc: qc(0),
                        signatures: vec![],
                    });
                    if rules.timeout(Round(round), &qc(qc_round), tc.as_ref()).is_ok() {
                        timed_out.push(round);
                    }
                }
            }
            let now = rules.data().clone();
            prop_assert!(now.last_voted_round >= last.last_voted_round);
            prop_assert!(now.one_chain_round >= last.one_chain_round);
            prop_assert!(now.highest_timeout_round >= last.highest_timeout_round);
            last = now;
        }
    }
}
