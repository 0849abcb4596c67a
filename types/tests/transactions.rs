//! Transaction validation, signing and untrusted decoding.

use keel_types::{
    Address, Batch, BatchAck, ChainId, Epoch, Error, MAX_KEY_LEN, MAX_OPS, MAX_TRANSACTION_BYTES,
    MAX_VALUE_LEN, MultiSignature, Nonce, Op, ProofOfAvailability, SignedTransaction, TimestampMs,
    Transaction, ValidatorIndex,
    encoding::decode,
    test_utils::{committee, seeded_key},
};
use proptest::prelude::*;

const CHAIN: ChainId = ChainId(7);

fn tx(ops: Vec<Op>) -> Transaction {
    Transaction {
        chain_id: CHAIN,
        sender: seeded_key("client", 0).public(),
        nonce: Nonce(0),
        expiry: TimestampMs(u64::MAX),
        ops,
    }
}

fn field_error(t: &Transaction) -> String {
    match t.validate() {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn static_rules_name_the_field_at_fault() {
    let other = Address::from_public_key(&seeded_key("client", 1).public());
    let me = tx(vec![]).sender_address();
    assert_eq!(field_error(&tx(vec![])), "ops");
    assert_eq!(
        field_error(&tx(vec![Op::Delete { key: vec![1] }; MAX_OPS + 1])),
        "ops"
    );
    assert_eq!(
        field_error(&tx(vec![Op::Transfer {
            to: other,
            amount: 0
        }])),
        "ops[0].amount"
    );
    assert_eq!(
        field_error(&tx(vec![
            Op::Transfer {
                to: other,
                amount: 1
            },
            Op::Transfer { to: me, amount: 5 }
        ])),
        "ops[1].to"
    );
    assert_eq!(
        field_error(&tx(vec![Op::Put {
            key: vec![],
            value: vec![]
        }])),
        "ops[0].key"
    );
    assert_eq!(
        field_error(&tx(vec![Op::Delete {
            key: vec![0; MAX_KEY_LEN + 1]
        }])),
        "ops[0].key"
    );
    assert_eq!(
        field_error(&tx(vec![Op::CompareAndSwap {
            key: vec![1],
            expected_version: 0,
            value: vec![0; MAX_VALUE_LEN + 1]
        }])),
        "ops[0].value"
    );
    let ok = tx(vec![
        Op::Transfer {
            to: other,
            amount: 3,
        },
        Op::Put {
            key: vec![0; MAX_KEY_LEN],
            value: vec![0; MAX_VALUE_LEN],
        },
    ]);
    assert_eq!(ok.validate(), Ok(()));
}

#[test]
fn signed_transactions_round_trip_and_verify() {
    let key = seeded_key("client", 0);
    let signed = tx(vec![Op::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    }])
    .sign(&key);
    let decoded = SignedTransaction::decode(&signed.encode()).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(decoded.verify_signature(), Ok(()));
    assert_eq!(decoded.validate(CHAIN), Ok(()));
    assert_eq!(
        decoded.validate(ChainId(8)),
        Err(Error::WrongChainId {
            expected: ChainId(8),
            found: CHAIN
        })
    );

    // Any change to the content invalidates the signature.
    let mut tampered = signed.clone();
    tampered.transaction.nonce = Nonce(1);
    assert_eq!(
        tampered.verify_signature(),
        Err(Error::InvalidSignature {
            what: "transaction"
        })
    );
    assert_ne!(tampered.digest(), signed.digest());

    // Signed by someone other than the sender.
    let forged = tx(vec![Op::Delete { key: b"k".to_vec() }]).sign(&seeded_key("client", 9));
    assert!(forged.verify_signature().is_err());
}

#[test]
fn oversize_encodings_are_refused_before_parsing() {
    let bytes = vec![0u8; MAX_TRANSACTION_BYTES + 1];
    assert_eq!(
        SignedTransaction::decode(&bytes),
        Err(Error::TooLarge {
            what: "signed transaction",
            size: MAX_TRANSACTION_BYTES + 1,
            limit: MAX_TRANSACTION_BYTES
        })
    );
    // A transaction whose ops are each valid but whose total size is over the cap.
    let big = tx(vec![
        Op::Put {
            key: vec![1],
            value: vec![0; MAX_VALUE_LEN]
        };
        3
    ])
    .sign(&seeded_key("client", 0));
    assert!(matches!(big.validate(CHAIN), Err(Error::TooLarge { .. })));
    assert!(matches!(
        SignedTransaction::decode(&big.encode()),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let signed = tx(vec![Op::Delete { key: b"k".to_vec() }]).sign(&seeded_key("client", 0));
    let mut bytes = signed.encode();
    bytes.push(0);
    assert!(matches!(
        SignedTransaction::decode(&bytes),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn proof_of_availability_needs_more_than_a_third() {
    let (c, keys) = committee(4);
    let batch = Batch {
        author: ValidatorIndex(0),
        epoch: Epoch(1),
        sequence: 0,
        expires_at: TimestampMs(60_000),
        transactions: vec![
            tx(vec![Op::Delete { key: b"k".to_vec() }]).sign(&seeded_key("client", 0)),
        ],
    };
    assert_eq!(batch.validate(CHAIN), Ok(()));
    let info = batch.info();
    let acks: Vec<BatchAck> = (0..4u32)
        .map(|i| BatchAck::new(info.clone(), ValidatorIndex(i), &keys[i as usize], CHAIN))
        .collect();
    for a in &acks {
        assert_eq!(a.verify(&c, CHAIN), Ok(()));
    }
    let proof = |n: usize| ProofOfAvailability {
        info: info.clone(),
        signatures: MultiSignature::from_signatures(
            acks[..n].iter().map(|a| (a.signer, a.signature)).collect(),
        ),
    };
    assert!(matches!(
        proof(1).verify(&c, CHAIN),
        Err(Error::InsufficientStake { .. })
    ));
    assert_eq!(proof(2).verify(&c, CHAIN), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = SignedTransaction::decode(&bytes);
        let _ = decode::<Batch>(&bytes, 1 << 20, "batch");
        let _ = decode::<keel_types::SignedBlock>(&bytes, 1 << 20, "block");
        let _ = decode::<keel_types::TimeoutCertificate>(&bytes, 1 << 20, "tc");
        let _ = decode::<keel_types::CertifiedCheckpoint>(&bytes, 1 << 20, "checkpoint");
    }

    #[test]
    fn encoding_round_trips(nonce in any::<u64>(), key in prop::collection::vec(any::<u8>(), 1..=MAX_KEY_LEN), value in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut t = tx(vec![Op::Put { key, value }]);
        t.nonce = Nonce(nonce);
        let signed = t.sign(&seeded_key("client", 0));
        prop_assert_eq!(SignedTransaction::decode(&signed.encode()).unwrap(), signed);
    }
}

#[test]
fn identify_matches_the_separate_computations() {
    let signed = tx(vec![Op::Put {
        key: b"k".to_vec(),
        value: vec![3; 100],
    }])
    .sign(&seeded_key("client", 0));
    let id = signed.transaction.identify();
    assert_eq!(id.digest, signed.digest());
    assert_eq!(id.signing_message, signed.transaction.signing_message());
    assert_eq!(id.encoded_len + 64, signed.encode().len());
}

#[test]
fn a_sender_key_that_is_not_a_curve_point_decodes_but_verifies_nothing() {
    let signed = tx(vec![Op::Delete { key: b"k".to_vec() }]).sign(&seeded_key("client", 0));
    let mut bytes = signed.encode();
    // The sender key follows the 8-byte chain id. y = 2 is not the y-coordinate of a point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert!(keel_types::PublicKey::from_bytes(&not_a_point).is_err());
    bytes[8..40].copy_from_slice(&not_a_point);
    let decoded = SignedTransaction::decode(&bytes).unwrap();
    assert!(decoded.verify_signature().is_err());
    let message = decoded.transaction.signing_message();
    let items = [keel_types::crypto::SignedMessage {
        message: &message,
        key: &decoded.transaction.sender,
        signature: &decoded.signature,
    }; 3];
    assert_eq!(keel_types::crypto::verify_batch(&items), Err(vec![0, 1, 2]));
}
