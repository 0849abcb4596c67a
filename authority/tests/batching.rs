//! Batches seal by count, bytes and time; acknowledgements from more than 1/3 of the stake form
//! a proof that verifies; bad, duplicate and unknown acknowledgements are refused.

use keel_authority::{AckError, BatchConfig, BatchMaker, ProofBuilder, designated_verifiers};
use keel_types::{
    BatchAck, ChainId, Epoch, Nonce, Op, SignedTransaction, TimestampMs, Transaction,
    ValidatorIndex,
    test_utils::{committee, seeded_key},
};
use std::sync::Arc;

const CHAIN: ChainId = ChainId(9);

fn tx(i: u64, value_len: usize) -> SignedTransaction {
    let key = seeded_key("client", i);
    Transaction {
        chain_id: CHAIN,
        sender: key.public(),
        nonce: Nonce(0),
        expiry: TimestampMs(u64::MAX),
        ops: vec![Op::Put {
            key: b"k".to_vec(),
            value: vec![1; value_len],
        }],
    }
    .sign(&key)
}

/// A maker that seals every transaction into its own batch.
fn one_per_batch() -> BatchMaker {
    let config = BatchConfig {
        max_transactions: 1,
        ..BatchConfig::default()
    };
    BatchMaker::new(config, ValidatorIndex(0), Epoch(1), 0)
}

#[test]
fn batches_seal_by_count_bytes_and_time() {
    let config = BatchConfig {
        max_transactions: 3,
        max_bytes: 4_000,
        seal_after_ms: 50,
        lifetime_ms: 1_000,
        ..BatchConfig::default()
    };
    let mut maker = BatchMaker::new(config, ValidatorIndex(0), Epoch(1), 0);
    assert!(maker.push(tx(0, 10), TimestampMs(0)).is_none());
    assert!(maker.push(tx(1, 10), TimestampMs(1)).is_none());
    let by_count = maker.push(tx(2, 10), TimestampMs(2)).unwrap();
    assert_eq!((by_count.sequence, by_count.transactions.len()), (0, 3));
    // It expires its lifetime after sealing.
    assert_eq!(by_count.expires_at, TimestampMs(1_002));
    // By bytes: the transaction that would overflow starts the next batch.
    assert!(maker.push(tx(3, 2_500), TimestampMs(3)).is_none());
    let by_bytes = maker.push(tx(4, 2_500), TimestampMs(4)).unwrap();
    assert_eq!((by_bytes.sequence, by_bytes.transactions.len()), (1, 1));
    // By time: the open batch (tx 4) waited 50 ms.
    assert!(maker.tick(TimestampMs(53)).is_none());
    let by_time = maker.tick(TimestampMs(54)).unwrap();
    assert_eq!((by_time.sequence, by_time.transactions.len()), (2, 1));
    assert!(maker.tick(TimestampMs(1_000)).is_none(), "nothing open");
}

#[test]
fn acknowledgements_form_a_verifiable_proof() {
    let (c, keys) = committee(4);
    let mut maker = one_per_batch();
    let batch = maker.push(tx(0, 10), TimestampMs(0)).unwrap();
    let mut builder = ProofBuilder::new(c.clone(), CHAIN, 16, 1_000);
    assert!(builder.track(&Arc::new(batch.clone()), TimestampMs(0)));
    let ack = |i: u32| BatchAck::new(batch.info(), ValidatorIndex(i), &keys[i as usize], CHAIN);
    assert_eq!(builder.add(&ack(0)), Ok(None));
    assert_eq!(
        builder.add(&ack(0)),
        Err(AckError::Duplicate(ValidatorIndex(0)))
    );
    // Signed by the wrong key.
    let mut forged = ack(1);
    forged.signature = ack(2).signature;
    assert!(matches!(builder.add(&forged), Err(AckError::Invalid(_))));
    let proof = builder
        .add(&ack(3))
        .unwrap()
        .expect("2 of 4 is more than 1/3");
    assert_eq!(proof.verify(&c, CHAIN), Ok(()));
    assert_eq!(builder.collecting(), 0);
    assert!(matches!(
        builder.add(&ack(1)),
        Err(AckError::UnknownBatch(_))
    ));
}

#[test]
fn a_late_batch_is_offered_again_twice_at_most_to_those_that_have_not_acknowledged_it() {
    let (c, keys) = committee(4);
    let mut maker = one_per_batch();
    let batch = Arc::new(maker.push(tx(0, 10), TimestampMs(0)).unwrap());
    let mut builder = ProofBuilder::new(c, CHAIN, 16, 10_000);
    assert!(builder.track(&batch, TimestampMs(0)));
    let own = BatchAck::new(batch.info(), ValidatorIndex(0), &keys[0], CHAIN);
    assert_eq!(builder.add(&own), Ok(None));
    assert!(
        builder.late(TimestampMs(299), 300).is_empty(),
        "not late yet"
    );
    assert_eq!(
        builder.late(TimestampMs(300), 300),
        vec![(batch.digest(), 0)]
    );
    let (again, to) = builder
        .reoffer(&batch.digest(), TimestampMs(300))
        .expect("offered again");
    assert_eq!(again.digest(), batch.digest());
    assert_eq!(to, [1, 2, 3].map(ValidatorIndex), "all but the signer");
    // Late again a fallback after the second offer, not before.
    assert!(builder.late(TimestampMs(599), 300).is_empty());
    assert_eq!(
        builder.late(TimestampMs(600), 300),
        vec![(batch.digest(), 1)]
    );
    assert!(builder.reoffer(&batch.digest(), TimestampMs(600)).is_some());
    assert_eq!(builder.offers(&batch.digest()), Some((TimestampMs(0), 2)));
    assert!(
        builder.late(TimestampMs(5_000), 300).is_empty(),
        "twice at most"
    );
    assert!(
        builder
            .reoffer(&batch.digest(), TimestampMs(5_000))
            .is_none()
    );
}

#[test]
fn designated_verifiers_rotate_and_with_the_author_reach_the_validity_threshold() {
    let (c, _) = committee(4);
    // f = 1: one verifier besides the author, each of the others in turn.
    let picks: Vec<Vec<ValidatorIndex>> = (0..6)
        .map(|s| designated_verifiers(&c, ValidatorIndex(1), s))
        .collect();
    assert_eq!(
        picks,
        [0, 2, 3, 0, 2, 3].map(|v| vec![ValidatorIndex(v)]).to_vec()
    );
    // Seven validators: f = 2, two besides the author.
    let (seven, _) = committee(7);
    for s in 0..14 {
        let chosen = designated_verifiers(&seven, ValidatorIndex(3), s);
        assert_eq!(chosen.len(), 2);
        assert!(!chosen.contains(&ValidatorIndex(3)), "never the author");
    }
    // Alone, the author is enough.
    let (one, _) = committee(1);
    assert!(designated_verifiers(&one, ValidatorIndex(0), 5).is_empty());
}

#[test]
fn uncertified_batches_expire_and_tracking_is_bounded() {
    let (c, _) = committee(4);
    let mut builder = ProofBuilder::new(c, CHAIN, 2, 100);
    let mut maker = one_per_batch();
    let b0 = maker.push(tx(0, 1), TimestampMs(0)).unwrap();
    let b1 = maker.push(tx(1, 1), TimestampMs(0)).unwrap();
    let b2 = maker.push(tx(2, 1), TimestampMs(0)).unwrap();
    assert!(builder.track(&Arc::new(b0.clone()), TimestampMs(0)));
    assert!(builder.track(&Arc::new(b1.clone()), TimestampMs(50)));
    assert!(
        !builder.track(&Arc::new(b2.clone()), TimestampMs(50)),
        "bounded"
    );
    assert_eq!(builder.expire(TimestampMs(120)), vec![b0.digest()]);
    assert_eq!(builder.collecting(), 1);
}

/// Sequences never repeat across a restart: the maker asks for a durable reservation before
/// the first batch at or past the last one, and a maker restarted from the reservation goes on
/// above every sequence the first one used.
#[test]
fn batch_sequences_are_reserved_ahead_and_a_restart_continues_above_them() {
    use keel_authority::batching::SEQUENCE_RESERVATION;
    let mut maker = one_per_batch();
    let first = maker.push(tx(0, 10), TimestampMs(0)).unwrap();
    assert_eq!(first.sequence, 0);
    assert_eq!(
        maker.reserve(),
        Some(SEQUENCE_RESERVATION),
        "reserved before the first batch"
    );
    let mut used = vec![first.sequence];
    for i in 1..SEQUENCE_RESERVATION + 3 {
        used.push(maker.push(tx(i, 10), TimestampMs(i)).unwrap().sequence);
        let expected = (i == SEQUENCE_RESERVATION).then_some(2 * SEQUENCE_RESERVATION);
        assert_eq!(maker.reserve(), expected, "after batch {i}");
    }
    // A restart: the node kept the last reservation, 2 × SEQUENCE_RESERVATION.
    let config = BatchConfig {
        max_transactions: 1,
        ..BatchConfig::default()
    };
    let mut restarted = BatchMaker::new(
        config,
        ValidatorIndex(0),
        Epoch(1),
        2 * SEQUENCE_RESERVATION,
    );
    let next = restarted.push(tx(0, 10), TimestampMs(0)).unwrap();
    assert!(
        used.iter().all(|s| *s < next.sequence),
        "sequence {} reused",
        next.sequence
    );
    assert_eq!(restarted.reserve(), Some(3 * SEQUENCE_RESERVATION));
}

/// Batches grow with load: the sealing time stays at `seal_after_ms` while the pipeline keeps
/// up, then grows with how far behind it is, up to `max_seal_after_ms`.
#[test]
fn the_sealing_time_grows_with_the_pipeline_wait_up_to_its_ceiling() {
    let config = BatchConfig {
        max_transactions: 1_000,
        seal_after_ms: 10,
        max_seal_after_ms: 40,
        grow_after_wait_ms: 100,
        ..BatchConfig::default()
    };
    let mut maker = BatchMaker::new(config, ValidatorIndex(0), Epoch(1), 0);
    assert_eq!(maker.pace(0), 10);
    assert_eq!(maker.pace(100), 10);
    assert_eq!(maker.pace(150), 20);
    assert_eq!(maker.pace(10_000), 40);
    // A batch opened at 0 is not sealed at 39 ms while the ceiling is in force...
    assert!(maker.push(tx(0, 1), TimestampMs(0)).is_none());
    assert!(maker.tick(TimestampMs(39)).is_none());
    // ...and is once the pipeline has caught up.
    assert_eq!(maker.pace(0), 10);
    assert!(maker.tick(TimestampMs(39)).is_some());
}
