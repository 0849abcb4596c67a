//! Certificate verification: quorum arithmetic, tampering, and every rejection reason.

use keel_types::{
    ChainId, Committee, Digest, Domain, Epoch, Error, KeyPair, MultiSignature, QuorumCertificate,
    Round, Signature, Threshold, Timeout, TimeoutCertificate, ValidatorIndex, VoteData,
    consensus::Block,
    crypto::{SignedMessage, signing_message, verify_batch},
    test_utils::{committee, committee_with_stakes},
};
use proptest::prelude::*;

const CHAIN: ChainId = ChainId(7);

fn vote_data(epoch: Epoch, round: u64) -> VoteData {
    VoteData {
        epoch,
        round: Round(round),
        block: Digest::of_bytes(&round.to_le_bytes()),
    }
}

fn vote_message(data: &VoteData) -> [u8; 32] {
    signing_message(Domain::Vote, data.epoch, CHAIN, data)
}

fn qc_signed_by(keys: &[KeyPair], signers: &[u32], data: VoteData) -> QuorumCertificate {
    let msg = vote_message(&data);
    let sigs = signers
        .iter()
        .map(|i| (ValidatorIndex(*i), keys[*i as usize].sign_message(&msg)))
        .collect();
    QuorumCertificate {
        data,
        signatures: MultiSignature::from_signatures(sigs),
    }
}

proptest! {
    #[test]
    fn any_two_quorums_share_more_than_a_third(
        stakes in prop::collection::vec(1u64..1_000_000, 1..20),
        a in prop::collection::vec(any::<bool>(), 20),
        b in prop::collection::vec(any::<bool>(), 20),
    ) {
        let (c, _) = committee_with_stakes(Epoch(1), &stakes);
        let sum = |m: &dyn Fn(usize) -> bool| -> u64 {
            (0..stakes.len()).filter(|i| m(*i)).map(|i| stakes[i]).sum()
        };
        let sa = sum(&|i| a[i]);
        let sb = sum(&|i| b[i]);
        let both = sum(&|i| a[i] && b[i]);
        if c.is_quorum(sa) && c.is_quorum(sb) {
            prop_assert!(c.is_validity(both), "quorums {sa} and {sb} share only {both} of {}", c.total_stake());
        }
        // The thresholds are the least stakes that pass.
        prop_assert!(c.is_quorum(c.quorum_threshold()));
        prop_assert!(!c.is_quorum(c.quorum_threshold() - 1));
        prop_assert!(c.is_validity(c.validity_threshold()));
        prop_assert!(!c.is_validity(c.validity_threshold() - 1));
    }

    #[test]
    fn changing_one_signature_fails_verification(
        n in 4usize..10,
        victim in any::<prop::sample::Index>(),
        byte in 0usize..64,
        bit in 0u8..8,
    ) {
        let (c, keys) = committee(n);
        let signers: Vec<u32> = (0..n as u32).collect();
        let mut qc = qc_signed_by(&keys, &signers, vote_data(Epoch(1), 5));
        prop_assert!(qc.verify(&c, CHAIN).is_ok());
        let sigs = qc.signatures.signatures_mut();
        let v = victim.index(sigs.len());
        sigs[v].1.0[byte] ^= 1 << bit;
        prop_assert!(qc.verify(&c, CHAIN).is_err());
    }

    #[test]
    fn swapping_in_another_signers_signature_fails(n in 4usize..8, victim in 0usize..4) {
        let (c, keys) = committee(n);
        let signers: Vec<u32> = (0..n as u32).collect();
        let mut qc = qc_signed_by(&keys, &signers, vote_data(Epoch(1), 9));
        let other = (victim + 1) % n;
        let stolen = qc.signatures.signatures()[other].1;
        qc.signatures.signatures_mut()[victim].1 = stolen;
        prop_assert_eq!(
            qc.verify(&c, CHAIN),
            Err(Error::InvalidSignature { what: "quorum certificate" })
        );
    }
}

#[test]
fn qc_rejects_insufficient_stake() {
    let (c, keys) = committee(4);
    // 2 of 4 is not more than 2/3; 3 of 4 is.
    let qc = qc_signed_by(&keys, &[0, 1], vote_data(Epoch(1), 3));
    assert!(matches!(
        qc.verify(&c, CHAIN),
        Err(Error::InsufficientStake {
            stake: 2,
            total: 4,
            ..
        })
    ));
    let qc = qc_signed_by(&keys, &[0, 1, 3], vote_data(Epoch(1), 3));
    assert_eq!(qc.verify(&c, CHAIN), Ok(()));
}

#[test]
fn qc_stake_is_weighted() {
    // One validator with 70% of the stake forms a quorum alone; the three others do not.
    let (c, keys) = committee_with_stakes(Epoch(1), &[70, 10, 10, 10]);
    assert_eq!(
        qc_signed_by(&keys, &[0], vote_data(Epoch(1), 3)).verify(&c, CHAIN),
        Ok(())
    );
    assert!(matches!(
        qc_signed_by(&keys, &[1, 2, 3], vote_data(Epoch(1), 3)).verify(&c, CHAIN),
        Err(Error::InsufficientStake { stake: 30, .. })
    ));
}

#[test]
fn qc_rejects_unknown_signer() {
    let (c, keys) = committee(4);
    let mut qc = qc_signed_by(&keys, &[0, 1, 2], vote_data(Epoch(1), 3));
    let sig = qc.signatures.signatures()[2].1;
    qc.signatures
        .signatures_mut()
        .push((ValidatorIndex(9), sig));
    assert_eq!(
        qc.verify(&c, CHAIN),
        Err(Error::UnknownSigner {
            index: ValidatorIndex(9),
            size: 4
        })
    );
}

#[test]
fn qc_rejects_duplicate_signer() {
    let (c, keys) = committee(4);
    let qc = qc_signed_by(&keys, &[0, 1], vote_data(Epoch(1), 3));
    let mut sigs = qc.signatures.signatures().to_vec();
    sigs.push(sigs[1]);
    let dup = QuorumCertificate {
        data: qc.data,
        signatures: MultiSignature::from_raw(sigs),
    };
    assert_eq!(
        dup.verify(&c, CHAIN),
        Err(Error::DuplicateSigner {
            index: ValidatorIndex(1),
            what: "quorum certificate"
        })
    );
}

#[test]
fn qc_rejects_wrong_epoch() {
    let (c, keys) = committee(4);
    let qc = qc_signed_by(&keys, &[0, 1, 2], vote_data(Epoch(2), 3));
    assert_eq!(
        qc.verify(&c, CHAIN),
        Err(Error::WrongEpoch {
            expected: Epoch(1),
            found: Epoch(2)
        })
    );
}

#[test]
fn qc_rejects_signatures_from_another_domain_or_chain() {
    let (c, keys) = committee(4);
    let data = vote_data(Epoch(1), 3);
    for (domain, chain) in [
        (Domain::Timeout, CHAIN),
        (Domain::Checkpoint, CHAIN),
        (Domain::Vote, ChainId(8)),
    ] {
        let msg = signing_message(domain, data.epoch, chain, &data);
        let sigs = (0..3u32)
            .map(|i| (ValidatorIndex(i), keys[i as usize].sign_message(&msg)))
            .collect();
        let qc = QuorumCertificate {
            data,
            signatures: MultiSignature::from_signatures(sigs),
        };
        assert_eq!(
            qc.verify(&c, CHAIN),
            Err(Error::InvalidSignature {
                what: "quorum certificate"
            }),
            "{domain:?} on chain {chain}"
        );
    }
}

#[test]
fn genesis_qc_is_only_valid_for_the_genesis_digest() {
    let (c, _) = committee(4);
    assert_eq!(
        QuorumCertificate::genesis(Epoch(1), CHAIN).verify(&c, CHAIN),
        Ok(())
    );
    let mut fake = QuorumCertificate::genesis(Epoch(1), CHAIN);
    fake.data.block = Digest::of_bytes(b"not genesis");
    assert!(matches!(
        fake.verify(&c, CHAIN),
        Err(Error::Malformed { .. })
    ));
}

fn timeout_cert(
    keys: &[KeyPair],
    c: &Committee,
    round: u64,
    hqc: &[(u32, QuorumCertificate)],
) -> TimeoutCertificate {
    let timeouts: Vec<Timeout> = hqc
        .iter()
        .map(|(i, qc)| {
            Timeout::new(
                Epoch(1),
                Round(round),
                qc.clone(),
                ValidatorIndex(*i),
                &keys[*i as usize],
                CHAIN,
            )
        })
        .collect();
    for t in &timeouts {
        t.verify(c, CHAIN).unwrap();
    }
    let high_qc = timeouts
        .iter()
        .map(|t| &t.high_qc)
        .max_by_key(|q| q.round())
        .unwrap()
        .clone();
    TimeoutCertificate {
        epoch: Epoch(1),
        round: Round(round),
        high_qc,
        signatures: timeouts
            .iter()
            .map(|t| (t.author, t.high_qc.round(), t.signature))
            .collect(),
    }
}

#[test]
fn timeout_certificate_verifies_and_rejects_a_stale_high_qc() {
    let (c, keys) = committee(4);
    let qc3 = qc_signed_by(&keys, &[0, 1, 2], vote_data(Epoch(1), 3));
    let qc4 = qc_signed_by(&keys, &[1, 2, 3], vote_data(Epoch(1), 4));
    let tc = timeout_cert(
        &keys,
        &c,
        6,
        &[(0, qc3.clone()), (1, qc4.clone()), (3, qc3.clone())],
    );
    assert_eq!(tc.verify(&c, CHAIN), Ok(()));

    // Claiming a lower high QC than a signer reported is caught.
    let mut stale = tc.clone();
    stale.high_qc = qc3;
    assert!(matches!(
        stale.verify(&c, CHAIN),
        Err(Error::Malformed { .. })
    ));

    // Lying about one's reported round breaks that signature.
    let mut lied = tc.clone();
    lied.signatures[0].1 = Round(4);
    assert_eq!(
        lied.verify(&c, CHAIN),
        Err(Error::InvalidSignature {
            what: "timeout certificate"
        })
    );

    // Too few signers.
    let mut few = tc;
    few.signatures.truncate(2);
    assert!(matches!(
        few.verify(&c, CHAIN),
        Err(Error::InsufficientStake { .. }) | Err(Error::Malformed { .. })
    ));
}

#[test]
fn a_vote_signature_is_not_a_valid_timeout_signature() {
    let (c, keys) = committee(4);
    let qc = QuorumCertificate::genesis(Epoch(1), CHAIN);
    let mut t = Timeout::new(Epoch(1), Round(1), qc, ValidatorIndex(0), &keys[0], CHAIN);
    let data = t.data();
    t.signature = keys[0].sign(Domain::Vote, Epoch(1), CHAIN, &data);
    assert_eq!(
        t.verify(&c, CHAIN),
        Err(Error::InvalidSignature { what: "timeout" })
    );
}

#[test]
fn block_rules_are_checked() {
    let (c, keys) = committee(4);
    let genesis = QuorumCertificate::genesis(Epoch(1), CHAIN);
    let block = |round: u64, author: u32, key: usize| {
        Block {
            epoch: Epoch(1),
            round: Round(round),
            author: ValidatorIndex(author),
            parent_qc: genesis.clone(),
            timeout_cert: None,
            failed_leaders: vec![],
            payload: vec![],
            timestamp: Default::default(),
        }
        .sign(&keys[key], CHAIN)
    };
    assert_eq!(block(1, 1, 1).verify(&c, CHAIN), Ok(()));
    // Signed by a key other than the author's.
    assert_eq!(
        block(1, 1, 2).verify(&c, CHAIN),
        Err(Error::InvalidSignature { what: "block" })
    );
    // Skipping a round needs a timeout certificate.
    assert!(matches!(
        block(2, 1, 1).verify(&c, CHAIN),
        Err(Error::Malformed { .. })
    ));
    // A round at or below the parent's.
    assert!(matches!(
        block(0, 1, 1).verify(&c, CHAIN),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn batch_verification_finds_the_one_bad_signature() {
    let (_, keys) = committee(8);
    let msgs: Vec<[u8; 32]> = (0..8u8).map(|i| [i; 32]).collect();
    let mut sigs: Vec<Signature> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| k.sign_message(m))
        .collect();
    let pubs: Vec<_> = keys.iter().map(|k| k.public()).collect();
    let items = |sigs: &[Signature]| -> Vec<(usize, [u8; 32], Signature)> {
        (0..8).map(|i| (i, msgs[i], sigs[i])).collect()
    };
    let check = |sigs: &[Signature]| {
        let owned = items(sigs);
        let refs: Vec<SignedMessage<'_>> = owned
            .iter()
            .map(|(i, m, s)| SignedMessage {
                message: m,
                key: &pubs[*i],
                signature: s,
            })
            .collect();
        verify_batch(&refs)
    };
    assert_eq!(check(&sigs), Ok(()));
    sigs[5].0[10] ^= 4;
    assert_eq!(check(&sigs), Err(vec![5]));
}

#[test]
fn threshold_reports_validity() {
    let (c, _) = committee(4);
    assert!(!Threshold::Validity.is_met(&c, 1));
    assert!(Threshold::Validity.is_met(&c, 2));
    assert!(!Threshold::Quorum.is_met(&c, 2));
    assert!(Threshold::Quorum.is_met(&c, 3));
}
