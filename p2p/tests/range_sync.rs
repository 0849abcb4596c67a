//! Committed-range sync: what a client accepts as proven committed, and how the state machine
//! schedules ranges over several peers, applies them in order and treats lying peers.

use keel_p2p::range_sync::{
    RangeError, RangeSync, RangeSyncConfig, SyncAction, committed_prefix, epoch_end_prefix,
    sync_target,
};
use keel_types::{
    Block, ChainId, Committee, Height, KeyPair, MultiSignature, QuorumCertificate, Round,
    SignedBlock, TimestampMs, ValidatorIndex, Vote, VoteData, consensus::genesis_digest,
    test_utils::committee,
};

const CHAIN: ChainId = ChainId(7);

struct Chain {
    committee: Committee,
    keys: Vec<KeyPair>,
    /// Committed blocks by height, index 0 being height 1.
    blocks: Vec<SignedBlock>,
}

impl Chain {
    /// `len` committed blocks; rounds listed in `skips` are left out (failed rounds), so the
    /// block after one is not one round above its parent.
    fn new(len: usize, skips: &[u64]) -> Self {
        let (committee, keys) = committee(4);
        let mut chain = Chain {
            committee,
            keys,
            blocks: Vec::new(),
        };
        let mut qc = QuorumCertificate::genesis(chain.committee.epoch(), CHAIN);
        let mut round = 0;
        while chain.blocks.len() < len {
            round += 1;
            if skips.contains(&round) {
                continue;
            }
            let block = Block {
                epoch: chain.committee.epoch(),
                round: Round(round),
                author: ValidatorIndex((round % 4) as u32),
                parent_qc: qc,
                timeout_cert: None,
                failed_leaders: vec![],
                payload: vec![],
                timestamp: TimestampMs(round),
            }
            .sign(&chain.keys[(round % 4) as usize], CHAIN);
            qc = chain.qc_for(&block, &[0, 1, 2]);
            chain.blocks.push(block);
        }
        chain
    }

    fn qc_for(&self, block: &SignedBlock, signers: &[u32]) -> QuorumCertificate {
        let data = VoteData {
            epoch: block.block.epoch,
            round: block.block.round,
            block: block.digest(),
        };
        let signatures = signers
            .iter()
            .map(|i| {
                let vote = Vote::new(data, ValidatorIndex(*i), &self.keys[*i as usize], CHAIN);
                (vote.author, vote.signature)
            })
            .collect();
        QuorumCertificate {
            data,
            signatures: MultiSignature::from_signatures(signatures),
        }
    }

    /// What an honest server answers for `from..=to`: the blocks plus two anchoring ones.
    fn range(&self, from: u64, to: u64) -> Vec<SignedBlock> {
        let end = (to as usize + 2).min(self.blocks.len());
        self.blocks[from as usize - 1..end].to_vec()
    }
}

fn config() -> RangeSyncConfig {
    RangeSyncConfig {
        chunk_blocks: 10,
        max_in_flight: 4,
        max_in_flight_per_peer: 2,
        done_margin: 2,
        ..RangeSyncConfig::default()
    }
}

#[test]
fn a_range_is_proven_up_to_its_highest_anchor() {
    let chain = Chain::new(20, &[]);
    let blocks = chain.range(1, 10);
    assert_eq!(blocks.len(), 12);
    assert_eq!(
        committed_prefix(&blocks, &chain.committee, CHAIN).unwrap(),
        10
    );
    // Without anchoring blocks above, the last two cannot be proven.
    assert_eq!(
        committed_prefix(&blocks[..10], &chain.committee, CHAIN).unwrap(),
        8
    );
    assert_eq!(
        committed_prefix(&blocks[..2], &chain.committee, CHAIN).unwrap(),
        0
    );
}

#[test]
fn a_failed_round_moves_the_anchor_down() {
    // Round 9 failed: heights 1..=10 have rounds 1..=8, 10, 11. Height 8 (round 8) is
    // followed by round 10, so it is not anchored by its child; height 9 (round 10) would
    // need a grandchild beyond the answer. The anchor is height 7: round 7, a child in round
    // 8, and a grandchild (round 10) carrying the QC for round 8.
    let chain = Chain::new(12, &[9]);
    let blocks = &chain.blocks[..10];
    assert_eq!(
        committed_prefix(blocks, &chain.committee, CHAIN).unwrap(),
        7
    );
}

#[test]
fn broken_links_bad_certificates_and_other_epochs_are_refused() {
    let chain = Chain::new(20, &[]);
    let mut blocks = chain.range(1, 10);
    blocks.swap(3, 4);
    assert!(matches!(
        committed_prefix(&blocks, &chain.committee, CHAIN),
        Err(RangeError::Broken { offset: 3 })
    ));

    // A forged anchor: the grandchild's QC for its parent is signed by one validator only.
    let mut blocks = chain.range(1, 10);
    let top = blocks.len() - 1;
    let child = blocks[top - 1].clone();
    let mut forged = blocks[top].block.clone();
    forged.parent_qc = chain.qc_for(&child, &[0]);
    blocks[top] = forged.sign(&chain.keys[0], CHAIN);
    assert!(matches!(
        committed_prefix(&blocks, &chain.committee, CHAIN),
        Err(RangeError::BadCertificate { .. })
    ));

    // An older epoch's block is a lie; a later epoch's ends the range (the epoch ended).
    let mut older = chain.blocks[0].block.clone();
    older.epoch = keel_types::Epoch(chain.committee.epoch().0 - 1);
    let blocks = vec![older.sign(&chain.keys[1], CHAIN)];
    assert!(matches!(
        committed_prefix(&blocks, &chain.committee, CHAIN),
        Err(RangeError::Epoch { .. })
    ));
    let mut later = chain.blocks[9].block.clone();
    later.epoch = keel_types::Epoch(chain.committee.epoch().0 + 1);
    let mut blocks = chain.blocks[..9].to_vec();
    blocks.push(later.sign(&chain.keys[1], CHAIN));
    let proven = committed_prefix(&blocks, &chain.committee, CHAIN).unwrap();
    assert!(
        proven > 0 && proven < 9,
        "proven {proven}: the tail needs more"
    );
}

#[test]
fn an_epoch_ending_checkpoint_proves_the_epochs_last_blocks() {
    let chain = Chain::new(20, &[]);
    let blocks = chain.blocks[..10].to_vec();
    let anchored = committed_prefix(&blocks, &chain.committee, CHAIN).unwrap();
    assert!(
        anchored < 10,
        "the last blocks have no certified grandchild in the range"
    );
    // The checkpoint names the block at height 10: all ten are proven by hash links.
    let end = (keel_types::Height(10), blocks[9].digest());
    assert_eq!(epoch_end_prefix(&blocks, keel_types::Height(1), end), 10);
    // Another digest at that height, or a broken link below it, proves nothing.
    let wrong = (keel_types::Height(10), blocks[8].digest());
    assert_eq!(epoch_end_prefix(&blocks, keel_types::Height(1), wrong), 0);
    let mut broken = blocks.clone();
    broken.swap(2, 3);
    assert_eq!(epoch_end_prefix(&broken, keel_types::Height(1), end), 0);
    // An end outside the range proves nothing here.
    assert_eq!(epoch_end_prefix(&blocks, keel_types::Height(11), end), 0);
}

#[test]
fn the_target_is_a_height_more_than_a_third_of_the_stake_claims() {
    let (committee, _) = committee(4);
    let claims = [
        (ValidatorIndex(1), Height(1_000_000)),
        (ValidatorIndex(2), Height(500)),
        (ValidatorIndex(3), Height(400)),
    ];
    // One validator (1/4 of the stake) cannot pull the target up by itself.
    assert_eq!(sync_target(&committee, &claims), Some(Height(500)));
    // Repeated claims of one validator count once.
    let repeated = [
        (ValidatorIndex(1), Height(900)),
        (ValidatorIndex(1), Height(900)),
    ];
    assert_eq!(sync_target(&committee, &repeated), None);
}

/// Runs a sync against honest or lying servers until it ends; returns the applied blocks and
/// the actions that dropped peers.
fn run(
    chain: &Chain,
    from: u64,
    target: u64,
    serve: impl Fn(ValidatorIndex, u64, u64) -> Option<Vec<SignedBlock>>,
) -> (Vec<SignedBlock>, Vec<SyncAction>, SyncAction) {
    let tip = if from == 0 {
        genesis_digest(chain.committee.epoch(), CHAIN)
    } else {
        chain.blocks[from as usize - 1].digest()
    };
    let peers = [
        (ValidatorIndex(1), Height(target)),
        (ValidatorIndex(2), Height(target)),
        (ValidatorIndex(3), Height(target)),
    ];
    let mut sync = RangeSync::new(
        config(),
        chain.committee.clone(),
        CHAIN,
        (Height(from), tip),
        Height(target),
        &peers,
    );
    let mut queue: std::collections::VecDeque<SyncAction> = sync.start().into();
    let mut applied = Vec::new();
    let mut dropped = Vec::new();
    let mut steps = 0;
    while let Some(action) = queue.pop_front() {
        steps += 1;
        assert!(steps < 10_000, "sync does not end");
        match action {
            SyncAction::Request { peer, from, to } => {
                assert!(to.0 - from.0 < 10, "ranges are at most chunk_blocks long");
                let next = match serve(peer, from.0, to.0) {
                    Some(blocks) => sync.on_response(peer, from, blocks),
                    None => sync.on_failure(peer, from),
                };
                queue.extend(next);
            }
            SyncAction::Apply {
                from: first,
                blocks,
            } => {
                assert_eq!(first.0, from + applied.len() as u64 + 1, "applied in order");
                applied.extend(blocks);
            }
            a @ SyncAction::DropPeer { .. } => dropped.push(a),
            end @ (SyncAction::Done { .. } | SyncAction::Stuck { .. }) => {
                return (applied, dropped, end);
            }
        }
    }
    panic!("sync ended without Done or Stuck");
}

#[test]
fn honest_peers_bring_the_node_to_the_target_in_order() {
    let chain = Chain::new(120, &[17, 40, 41, 77]);
    let (applied, dropped, end) = run(&chain, 5, 110, |_, from, to| Some(chain.range(from, to)));
    assert!(dropped.is_empty());
    assert!(matches!(end, SyncAction::Done { applied } if applied.0 >= 108));
    assert_eq!(applied[..], chain.blocks[5..5 + applied.len()]);
    assert!(applied.len() >= 103);
}

#[test]
fn a_lying_peer_is_dropped_and_the_others_complete_the_sync() {
    let chain = Chain::new(120, &[]);
    // Validator 2 shifts heights by one (honest blocks, wrong place); validator 3 breaks the
    // chain. Validator 1 is honest.
    let (applied, dropped, end) = run(&chain, 0, 110, |peer, from, to| match peer.0 {
        2 => Some(chain.range(from + 1, to + 1)),
        3 => {
            let mut blocks = chain.range(from, to);
            blocks.swap(0, 1);
            Some(blocks)
        }
        _ => Some(chain.range(from, to)),
    });
    assert!(matches!(end, SyncAction::Done { .. }));
    assert_eq!(applied[..], chain.blocks[..applied.len()]);
    let dropped: Vec<u32> = dropped
        .iter()
        .map(|a| match a {
            SyncAction::DropPeer { peer, .. } => peer.0,
            _ => unreachable!(),
        })
        .collect();
    assert!(
        dropped.contains(&3),
        "the chain breaker is dropped: {dropped:?}"
    );
}

#[test]
fn failing_peers_are_retried_elsewhere_and_sync_reports_stuck_when_none_serves() {
    let chain = Chain::new(60, &[]);
    let (applied, _, end) = run(&chain, 0, 50, |peer, from, to| {
        (peer.0 == 1).then(|| chain.range(from, to))
    });
    assert!(matches!(end, SyncAction::Done { .. }));
    assert_eq!(applied[..], chain.blocks[..applied.len()]);

    let (applied, _, end) = run(&chain, 0, 50, |_, _, _| None);
    assert!(applied.is_empty());
    assert_eq!(end, SyncAction::Stuck { applied: Height(0) });
}
