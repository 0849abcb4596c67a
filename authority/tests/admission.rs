//! Admission: forged signatures are found one by one, replays and stale nonces refused, bad input
//! named, and a full pool answers "overloaded" and recovers when drained.

use keel_authority::{AccountReader, Mempool, MempoolConfig, Rejection};
use keel_types::{
    Account, Address, ChainId, FeeSchedule, MAX_TRANSACTION_BYTES, Nonce, Op, SignedTransaction,
    TimestampMs, Transaction, test_utils::seeded_key,
};
use std::collections::HashMap;

const CHAIN: ChainId = ChainId(9);
const NOW: TimestampMs = TimestampMs(1_000_000);

#[derive(Default)]
struct Nonces(HashMap<Address, Nonce>);

impl AccountReader for Nonces {
    fn account(&self, address: &Address) -> Account {
        Account {
            balance: u64::MAX,
            nonce: self.0.get(address).copied().unwrap_or_default(),
        }
    }
}

fn tx(sender: u64, nonce: u64) -> SignedTransaction {
    let key = seeded_key("client", sender);
    Transaction {
        chain_id: CHAIN,
        sender: key.public(),
        nonce: Nonce(nonce),
        expiry: TimestampMs(NOW.0 + 60_000),
        ops: vec![Op::Put {
            key: b"k".to_vec(),
            value: nonce.to_le_bytes().to_vec(),
        }],
    }
    .sign(&key)
}

fn pool() -> Mempool {
    Mempool::new(MempoolConfig::default(), CHAIN, FeeSchedule::default())
}

#[test]
fn a_forged_signature_in_a_batch_rejects_only_that_transaction() {
    let mut pool = pool();
    let mut txs: Vec<SignedTransaction> = (0..16).map(|i| tx(i, 0)).collect();
    txs[7].signature.0[5] ^= 1;
    let results = pool.admit(txs, NOW, &Nonces::default());
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert_eq!(r, &Err(Rejection::BadSignature));
        } else {
            assert!(r.is_ok(), "tx {i}: {r:?}");
        }
    }
    assert_eq!(pool.len(), 15);
}

#[test]
fn replays_and_stale_nonces_are_refused() {
    let mut pool = pool();
    let t = tx(1, 3);
    let mut nonces = Nonces::default();
    nonces.0.insert(t.transaction.sender_address(), Nonce(3));
    let digest = pool.admit(vec![t.clone()], NOW, &nonces)[0]
        .clone()
        .unwrap();
    // Same digest again.
    assert_eq!(
        pool.admit(vec![t.clone()], NOW, &nonces)[0],
        Err(Rejection::Duplicate(digest))
    );
    // Executed: the account's nonce moved past it.
    pool.take(10);
    nonces.0.insert(t.transaction.sender_address(), Nonce(4));
    assert_eq!(
        pool.admit(vec![t], NOW, &nonces)[0],
        Err(Rejection::StaleNonce {
            nonce: Nonce(3),
            next: Nonce(4)
        })
    );
    // Too far ahead.
    assert!(matches!(
        pool.admit(vec![tx(1, 500)], NOW, &nonces)[0],
        Err(Rejection::NonceTooFarAhead { .. })
    ));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let mut pool = pool();
    let nonces = Nonces::default();
    let mut other_chain = tx(1, 0).transaction;
    other_chain.chain_id = ChainId(1);
    let other_chain = other_chain.sign(&seeded_key("client", 1));
    assert_eq!(
        pool.admit(vec![other_chain], NOW, &nonces)[0],
        Err(Rejection::WrongChain {
            expected: CHAIN,
            found: ChainId(1)
        })
    );
    let mut expired = tx(2, 0).transaction;
    expired.expiry = TimestampMs(NOW.0 - 1);
    let expired = expired.sign(&seeded_key("client", 2));
    assert!(matches!(
        pool.admit(vec![expired], NOW, &nonces)[0],
        Err(Rejection::Expired { .. })
    ));
    let mut empty_key = tx(3, 0).transaction;
    empty_key.ops = vec![Op::Delete { key: vec![] }];
    let empty_key = empty_key.sign(&seeded_key("client", 3));
    match &pool.admit(vec![empty_key], NOW, &nonces)[0] {
        Err(Rejection::Invalid(msg)) => assert!(msg.contains("ops[0].key"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Oversize bytes never decode.
    assert!(SignedTransaction::decode(&vec![0; MAX_TRANSACTION_BYTES + 1]).is_err());
}

#[test]
fn a_full_pool_answers_overloaded_and_recovers() {
    let config = MempoolConfig {
        max_pending: 10,
        ..MempoolConfig::default()
    };
    let mut pool = Mempool::new(config, CHAIN, FeeSchedule::default());
    let nonces = Nonces::default();
    let results = pool.admit((0..12).map(|i| tx(i, 0)).collect(), NOW, &nonces);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    assert!(matches!(results[11], Err(Rejection::Overloaded(_))));
    assert_eq!(pool.take(5).len(), 5);
    assert!(pool.admit(vec![tx(11, 0)], NOW, &nonces)[0].is_ok());
}

#[test]
fn one_sender_cannot_take_the_whole_pool() {
    let config = MempoolConfig {
        max_pending_per_sender: 3,
        ..MempoolConfig::default()
    };
    let mut pool = Mempool::new(config, CHAIN, FeeSchedule::default());
    let results = pool.admit((0..5).map(|n| tx(1, n)).collect(), NOW, &Nonces::default());
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert!(matches!(results[4], Err(Rejection::Overloaded(_))));
}

/// Every account holds 10 at nonce 0.
struct Poor;

impl AccountReader for Poor {
    fn account(&self, _address: &Address) -> Account {
        Account {
            balance: 10,
            nonce: Nonce(0),
        }
    }
}

#[test]
fn a_sender_that_cannot_pay_the_fee_is_refused() {
    // `tx` puts 8 bytes under a 1-byte key: 5 + 1 × 9 = 14, more than 10.
    let fees = FeeSchedule {
        per_op: 5,
        per_byte: 1,
    };
    let mut pool = Mempool::new(MempoolConfig::default(), CHAIN, fees);
    let results = pool.admit(vec![tx(0, 0)], NOW, &Poor);
    assert!(
        matches!(
            results[0],
            Err(Rejection::CannotPayFee {
                fee: 14,
                balance: 10
            })
        ),
        "{results:?}"
    );
    assert!(pool.is_empty());
    // A fee the balance covers is admitted.
    let cheap = FeeSchedule {
        per_op: 1,
        per_byte: 1,
    };
    let mut pool = Mempool::new(MempoolConfig::default(), CHAIN, cheap);
    assert!(pool.admit(vec![tx(0, 0)], NOW, &Poor)[0].is_ok());
}

#[test]
fn a_senders_pending_transactions_must_be_payable_together() {
    // Each transaction costs 14; a balance of 10 pays none, of 30 pays two at once.
    struct Holds30;
    impl AccountReader for Holds30 {
        fn account(&self, _address: &Address) -> Account {
            Account {
                balance: 30,
                nonce: Nonce(0),
            }
        }
    }
    let fees = FeeSchedule {
        per_op: 5,
        per_byte: 1,
    };
    let mut pool = Mempool::new(MempoolConfig::default(), CHAIN, fees);
    let results = pool.admit((0..3).map(|n| tx(0, n)).collect(), NOW, &Holds30);
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(
        matches!(
            results[2],
            Err(Rejection::CannotPayFee {
                fee: 42,
                balance: 30
            })
        ),
        "{results:?}"
    );
    // Once one is taken for a batch, its fee no longer counts against the next.
    assert_eq!(pool.take(1).len(), 1);
    assert!(pool.admit(vec![tx(0, 2)], NOW, &Holds30)[0].is_ok());
}
