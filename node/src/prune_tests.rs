//! The pruner's deletions on a real store: blocks, digest index, batches (kept while a retained
//! block orders them again) and receipts (only those written at pruned heights).

use super::*;
use keel_authority::{ProofBuilder, store_batch};
use keel_consensus::CommittedBlock;
use keel_storage::StoreConfig;
use keel_types::{
    Address, BatchAck, ChainId, Committee, ExecutionStatus, KeyPair, Nonce, Op,
    ProofOfAvailability, QuorumCertificate, Round, SignedTransaction, TimestampMs, Transaction,
    ValidatorIndex, test_utils,
};

const CHAIN: ChainId = ChainId(7);
const NOW: TimestampMs = TimestampMs(1_000_000);

fn transaction(sender: &KeyPair, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN,
        sender: sender.public(),
        nonce: Nonce(nonce),
        expiry: TimestampMs(NOW.0 + 60_000),
        ops: vec![Op::Transfer {
            to: Address([1; 32]),
            amount: 1,
        }],
    }
    .sign(sender)
}

fn proof(committee: &Committee, keys: &[KeyPair], batch: &Batch) -> ProofOfAvailability {
    let mut builder = ProofBuilder::new(committee.clone(), CHAIN, 16, 60_000);
    assert!(builder.track(&std::sync::Arc::new(batch.clone()), NOW));
    let mut proof = None;
    for (i, key) in keys.iter().enumerate().take(2) {
        let ack = BatchAck::new(batch.info(), ValidatorIndex(i as u32), key, CHAIN);
        proof = builder.add(&ack).unwrap().or(proof);
    }
    proof.expect("two of four acknowledgements form a proof")
}

fn receipt(tx: &SignedTransaction, height: u64) -> WriteOp {
    let receipt = Receipt {
        transaction: tx.digest(),
        sender: tx.transaction.sender_address(),
        nonce: tx.transaction.nonce,
        status: ExecutionStatus::Success,
        effects: vec![],
        height: Height(height),
        block: Digest::default(),
        position: 0,
        fee: 0,
    };
    WriteOp {
        column: Column::Receipts,
        key: tx.digest().0.to_vec(),
        value: Some(state::encode(&receipt)),
    }
}

struct Chain {
    _dir: tempfile::TempDir,
    store: Store,
    /// Transactions of batches A (heights 1 and 3), B (height 2) and C (height 4).
    a: Vec<SignedTransaction>,
    b: SignedTransaction,
    c: SignedTransaction,
    batches: [Digest; 3],
}

/// Heights 1..=10: A at 1 and again at 3, B at 2, C at 4, the rest empty. Receipts: A's at 1,
/// C's at 4, B's rewritten at 6 (a retained height).
fn chain() -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let (committee, keys) = test_utils::committee(4);
    let sender = test_utils::seeded_key("prune-test", 0);
    let a = vec![transaction(&sender, 0), transaction(&sender, 1)];
    let (b, c) = (transaction(&sender, 2), transaction(&sender, 3));
    let batch = |sequence, transactions: Vec<SignedTransaction>| Batch {
        author: ValidatorIndex(0),
        epoch: committee.epoch(),
        sequence,
        expires_at: TimestampMs(u64::MAX),
        transactions,
    };
    let batches = [
        batch(0, a.clone()),
        batch(1, vec![b.clone()]),
        batch(2, vec![c.clone()]),
    ];
    for x in &batches {
        store_batch(&store, x).unwrap();
    }
    let proofs: Vec<_> = batches
        .iter()
        .map(|x| proof(&committee, &keys, x))
        .collect();
    let blocks: Vec<CommittedBlock> = (1..=10u64)
        .map(|h| {
            let payload = match h {
                1 | 3 => vec![proofs[0].clone()],
                2 => vec![proofs[1].clone()],
                4 => vec![proofs[2].clone()],
                _ => vec![],
            };
            let block = keel_types::Block {
                epoch: committee.epoch(),
                round: Round(h),
                author: ValidatorIndex(0),
                parent_qc: QuorumCertificate::genesis(committee.epoch(), CHAIN),
                timeout_cert: None,
                failed_leaders: vec![],
                payload,
                timestamp: NOW,
            }
            .sign(&keys[0], CHAIN);
            CommittedBlock {
                block,
                height: Height(h),
            }
        })
        .collect();
    persist::save_commit(&store, &blocks).unwrap();
    let receipts = vec![
        receipt(&a[0], 1),
        receipt(&a[1], 1),
        receipt(&b, 6),
        receipt(&c, 4),
    ];
    store.write(receipts, false).unwrap();
    Chain {
        _dir: dir,
        store,
        a,
        b,
        c,
        batches: batches.map(|x| x.digest()),
    }
}

fn has_receipt(store: &Store, tx: &SignedTransaction) -> bool {
    state::receipt(store, &tx.digest()).unwrap().is_some()
}

fn has_batch(store: &Store, digest: &Digest) -> bool {
    store.get(Column::Batches, &digest.0).unwrap().is_some()
}

#[test]
fn pruning_deletes_blocks_batches_and_their_receipts_but_keeps_what_retained_heights_use() {
    let c = chain();
    let digest_of = |h| {
        persist::committed_at(&c.store, Height(h))
            .unwrap()
            .unwrap()
            .block
            .digest()
    };
    let (d1, d3) = (digest_of(1), digest_of(3));

    // Height 1 only: A is ordered again at 3 (retained), so it stays; its receipts (written at
    // height 1) go.
    let outcome = prune_heights(&c.store, Height(1)..Height(2)).unwrap();
    assert_eq!((outcome.retained_from, outcome.heights), (Height(2), 1));
    assert_eq!((outcome.batches, outcome.receipts), (0, 2));
    assert_eq!(persist::retained_from(&c.store).unwrap(), Height(2));
    assert!(
        persist::committed_at(&c.store, Height(1))
            .unwrap()
            .is_none()
    );
    assert!(persist::block_by_digest(&c.store, &d1).unwrap().is_none());
    assert!(has_batch(&c.store, &c.batches[0]));
    assert!(!has_receipt(&c.store, &c.a[0]) && !has_receipt(&c.store, &c.a[1]));

    // Heights 2 and 3: A and B go; B's receipt was rewritten at 6 and stays.
    let outcome = prune_heights(&c.store, Height(2)..Height(4)).unwrap();
    assert_eq!((outcome.retained_from, outcome.batches), (Height(4), 2));
    assert!(!has_batch(&c.store, &c.batches[0]) && !has_batch(&c.store, &c.batches[1]));
    assert!(has_receipt(&c.store, &c.b));
    assert!(persist::block_by_digest(&c.store, &d3).unwrap().is_none());
    assert!(
        persist::batch_ordered_at(&c.store, &c.batches[0])
            .unwrap()
            .is_none()
    );
    // What is retained is untouched.
    assert!(has_batch(&c.store, &c.batches[2]) && has_receipt(&c.store, &c.c));
    assert!(
        persist::committed_at(&c.store, Height(4))
            .unwrap()
            .is_some()
    );

    // The rest through the pass runner, with a compaction.
    let plan = PrunePlan {
        delete: Some(Height(4)..Height(8)),
        compact: true,
        lag_blocks: 4,
    };
    let outcome = carry_out(&c.store, &plan, Height(4)).unwrap();
    assert!(outcome.compacted);
    assert_eq!((outcome.retained_from, outcome.heights), (Height(8), 4));
    assert!(!has_batch(&c.store, &c.batches[2]) && !has_receipt(&c.store, &c.c));
    assert!(
        persist::committed_at(&c.store, Height(7))
            .unwrap()
            .is_none()
    );
    assert!(
        persist::committed_at(&c.store, Height(8))
            .unwrap()
            .is_some()
    );
    assert_eq!(persist::retained_from(&c.store).unwrap(), Height(8));
}

#[test]
fn nothing_pruned_means_height_one_and_compaction_alone_keeps_it() {
    let c = chain();
    assert_eq!(persist::retained_from(&c.store).unwrap(), Height(1));
    let plan = PrunePlan {
        delete: None,
        compact: true,
        lag_blocks: 0,
    };
    let outcome = carry_out(&c.store, &plan, Height(1)).unwrap();
    assert_eq!((outcome.retained_from, outcome.heights), (Height(1), 0));
    assert!(
        persist::committed_at(&c.store, Height(1))
            .unwrap()
            .is_some()
    );
}

#[test]
fn the_pruning_rate_must_be_twice_the_fastest_chain() {
    let config = PruningConfig::default();
    assert!(check_config(&config, 20).is_ok());
    let slow = PruningConfig {
        interval_ms: 1_000,
        max_heights_per_pass: 50,
        ..config.clone()
    };
    let (field, reason) = check_config(&slow, 20).unwrap_err();
    assert_eq!(field, "max_heights_per_pass", "{reason}");
    assert!(check_config(&slow, 40).is_ok(), "25 blocks/s at most");
    let off = PruningConfig {
        enabled: false,
        ..slow
    };
    assert!(check_config(&off, 20).is_ok());
    let few = PruningConfig {
        keep_blocks: 10,
        ..config
    };
    assert_eq!(check_config(&few, 20).unwrap_err().0, "keep_blocks");
}
