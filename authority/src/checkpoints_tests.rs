//! Tests of the checkpoint state machine: honest certification, signatures ahead of
//! execution, Byzantine signers (wrong root, non-member, forged, duplicate, equivocating),
//! bounds, peers' certificates, gaps, restarts and divergence.

use super::*;
use keel_types::test_utils::committee;

const CHAIN: ChainId = ChainId(7);
const K: u64 = 10;

struct Net {
    committee: Committee,
    keys: Vec<Arc<KeyPair>>,
    genesis: Checkpoint,
}

fn net(n: usize) -> Net {
    let (committee, keys) = committee(n);
    let genesis = Checkpoint::genesis(
        committee.epoch(),
        Digest::of_bytes(b"genesis"),
        Digest::of_bytes(b"genesis root"),
    );
    Net {
        committee,
        keys: keys.into_iter().map(Arc::new).collect(),
        genesis,
    }
}

impl Net {
    /// What a fresh validator `me` signs after executing `e`.
    fn signed(&self, me: u32, e: Executed) -> CheckpointSignature {
        let mut m = self.machine(me, Restored::default());
        broadcast(&m.handle_executed(e).actions)
    }

    /// What fresh validators `who` sign after executing height `K`.
    fn first_signatures(&self, who: std::ops::Range<u32>) -> Vec<CheckpointSignature> {
        who.map(|i| self.signed(i, executed(K))).collect()
    }

    /// Fresh machines for validators `who`.
    fn machines(&self, who: std::ops::Range<u32>) -> Vec<CheckpointMachine> {
        who.map(|i| self.machine(i, Restored::default())).collect()
    }

    fn machine(&self, me: u32, restored: Restored) -> CheckpointMachine {
        CheckpointMachine::new(CheckpointDeps {
            config: CheckpointConfig {
                interval: K,
                window: 2,
            },
            chain_id: CHAIN,
            committee: self.committee.clone(),
            me: Some(ValidatorIndex(me)),
            key: self.keys[me as usize].clone(),
            genesis: self.genesis.clone(),
            restored,
        })
    }
}

fn executed(height: u64) -> Executed {
    executed_with_root(height, Digest::of_tagged("root", &height))
}

fn executed_with_root(height: u64, state_root: Digest) -> Executed {
    Executed {
        height: Height(height),
        block: Digest::of_tagged("block", &height),
        state_root,
        executed_transactions: height * 3,
        epoch_end: None,
    }
}

/// The signature a node broadcast in `actions`.
fn broadcast(actions: &[CheckpointAction]) -> CheckpointSignature {
    actions
        .iter()
        .find_map(|a| match a {
            CheckpointAction::Broadcast(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a broadcast")
}

fn certified(actions: &[CheckpointAction]) -> Option<CertifiedCheckpoint> {
    actions.iter().find_map(|a| match a {
        CheckpointAction::PersistCertified(c) => Some(c.clone()),
        _ => None,
    })
}

/// Every node executes `height`; every signature reaches every node. Returns what each
/// certified.
fn run_round(nodes: &mut [CheckpointMachine], height: u64) -> Vec<Option<CertifiedCheckpoint>> {
    let signatures: Vec<_> = nodes
        .iter_mut()
        .map(|m| broadcast(&m.handle_executed(executed(height)).actions))
        .collect();
    let mut out = vec![None; nodes.len()];
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, s) in signatures.iter().enumerate() {
            if i != j
                && let Some(c) = certified(&node.handle_signature(s.clone()).actions)
            {
                out[i] = Some(c);
            }
        }
    }
    out
}

#[test]
fn honest_validators_certify_the_same_chain_of_checkpoints() {
    let net = net(4);
    let mut nodes = net.machines(0..4);
    let mut previous = net.genesis.digest();
    for sequence in 1..=3u64 {
        let certified = run_round(&mut nodes, sequence * K);
        let first = certified[0].clone().expect("certified");
        // Same checkpoint everywhere (the signer sets may differ: the first quorum to arrive).
        assert!(
            certified
                .iter()
                .all(|c| c.as_ref().map(|c| &c.checkpoint) == Some(&first.checkpoint))
        );
        assert_eq!(first.verify(&net.committee, CHAIN), Ok(()));
        let cp = &first.checkpoint;
        assert_eq!(
            (cp.sequence, cp.last_height, cp.previous),
            (sequence, Height(sequence * K), previous)
        );
        assert_eq!(cp.state_root, executed(sequence * K).state_root);
        assert_eq!(cp.executed_transactions, sequence * K * 3);
        previous = cp.digest();
        assert!(nodes.iter().all(|n| n.certified_sequence() == sequence));
        assert_eq!(
            nodes[2].kept_signatures(),
            0,
            "certified sequences are dropped"
        );
    }
}

#[test]
fn only_multiples_of_the_interval_and_epoch_ends_are_signed_and_persisted_before_sent() {
    let net = net(4);
    let mut m = net.machine(0, Restored::default());
    for h in 1..K {
        let r = m.handle_executed(executed(h));
        assert_eq!(r.outcome, ExecutedOutcome::NotABoundary);
        assert!(r.actions.is_empty());
    }
    let r = m.handle_executed(executed(K));
    assert_eq!(r.outcome, ExecutedOutcome::Signed { sequence: 1 });
    assert!(matches!(
        r.actions.as_slice(),
        [CheckpointAction::PersistOwn(a), CheckpointAction::Broadcast(b)] if a == b
    ));
    assert_eq!(m.signed_sequence(), Some(1));
    // An epoch end off the interval is signed too, naming the next committee.
    let mut end = executed(K + 3);
    end.epoch_end = Some(net.committee.clone());
    let r = m.handle_executed(end);
    assert_eq!(r.outcome, ExecutedOutcome::Signed { sequence: 2 });
    let s = broadcast(&r.actions);
    assert_eq!(s.checkpoint.next_committee.as_ref(), Some(&net.committee));
    assert_eq!(s.verify(&net.committee, CHAIN), Ok(()));
    // The next regular one chains onto the epoch-end checkpoint.
    let r = m.handle_executed(executed(2 * K));
    assert_eq!(
        broadcast(&r.actions).checkpoint.previous,
        s.checkpoint.digest()
    );
}

#[test]
fn signatures_ahead_of_execution_wait_and_are_matched_when_the_node_signs() {
    let net = net(4);
    let early = net.first_signatures(1..3);
    let mut m = net.machine(0, Restored::default());
    for s in early {
        assert_eq!(m.handle_signature(s).outcome, SignatureOutcome::Added);
    }
    assert_eq!(m.kept_signatures(), 2);
    assert_eq!(m.certified_sequence(), 0, "two of four is no quorum");
    let r = m.handle_executed(executed(K));
    let c = certified(&r.actions).expect("its own signature completes the quorum");
    assert_eq!(c.signatures.len(), 3);
    assert_eq!(m.certified_sequence(), 1);
}

#[test]
fn a_byzantine_signer_with_a_wrong_root_does_not_certify_and_cannot_change_its_mind() {
    let net = net(4);
    let mut m = net.machine(0, Restored::default());
    let lie = net.signed(3, executed_with_root(K, Digest::of_bytes(b"forged")));
    assert_eq!(
        m.handle_signature(lie.clone()).outcome,
        SignatureOutcome::Added
    );
    assert_eq!(m.handle_signature(lie).outcome, SignatureOutcome::Duplicate);
    // Its honest-looking second signature at the same sequence is an equivocation.
    assert_eq!(
        m.handle_signature(net.signed(3, executed(K))).outcome,
        SignatureOutcome::Equivocation
    );
    let r = m.handle_executed(executed(K));
    assert!(
        certified(&r.actions).is_none(),
        "own + liar differ: no quorum"
    );
    assert!(
        certified(&m.handle_signature(net.signed(1, executed(K))).actions).is_none(),
        "2 honest of 4"
    );
    let r = m.handle_signature(net.signed(2, executed(K)));
    assert_eq!(r.outcome, SignatureOutcome::Certified);
    let c = certified(&r.actions).unwrap();
    assert_eq!(c.checkpoint.state_root, executed(K).state_root);
    assert!(c.signatures.signers().all(|i| i != ValidatorIndex(3)));
}

#[test]
fn non_members_forgeries_and_other_chains_are_invalid_and_not_kept() {
    let net = net(4);
    let mut m = net.machine(0, Restored::default());
    let good = net.signed(1, executed(K));
    let mut stranger = good.clone();
    stranger.signer = ValidatorIndex(9);
    assert!(matches!(
        m.handle_signature(stranger).outcome,
        SignatureOutcome::Invalid(keel_types::Error::UnknownSigner { .. })
    ));
    // Signed by validator 1's key but claimed for validator 2.
    let mut forged = good.clone();
    forged.signer = ValidatorIndex(2);
    assert!(matches!(
        m.handle_signature(forged).outcome,
        SignatureOutcome::Invalid(_)
    ));
    // Validator 1's signature with the root changed after signing.
    let mut tampered = good.clone();
    tampered.checkpoint.state_root = Digest::of_bytes(b"x");
    assert!(matches!(
        m.handle_signature(tampered).outcome,
        SignatureOutcome::Invalid(_)
    ));
    let other_chain = CheckpointSignature::new(
        good.checkpoint.clone(),
        ValidatorIndex(1),
        &net.keys[1],
        ChainId(8),
    );
    assert!(matches!(
        m.handle_signature(other_chain).outcome,
        SignatureOutcome::Invalid(_)
    ));
    assert_eq!(m.kept_signatures(), 0);
    // The real one is still accepted (the forgeries did not take validator 1's slot).
    assert_eq!(m.handle_signature(good).outcome, SignatureOutcome::Added);
}

#[test]
fn the_buffer_is_bounded_by_the_window_and_the_committee() {
    let net = net(4);
    let mut m = net.machine(0, Restored::default());
    // A member signs far ahead: only sequences within the window are kept.
    for sequence in 1..=50u64 {
        let cp = Checkpoint {
            sequence,
            last_height: Height(sequence * K),
            ..net.genesis.clone()
        };
        let s = CheckpointSignature::new(cp, ValidatorIndex(1), &net.keys[1], CHAIN);
        let expected = if sequence <= 2 {
            SignatureOutcome::Added
        } else {
            SignatureOutcome::OutOfWindow
        };
        assert_eq!(
            m.handle_signature(s).outcome,
            expected,
            "sequence {sequence}"
        );
    }
    assert_eq!(m.kept_signatures(), 2);
    assert_eq!(
        SignatureOutcome::OutOfWindow.refusal(),
        Some("out_of_window")
    );
}

#[test]
fn a_peer_certificate_is_verified_and_adopted_only_if_newer() {
    let net = net(4);
    let mut nodes = net.machines(0..4);
    run_round(&mut nodes, K);
    let second = run_round(&mut nodes, 2 * K)[0].clone().unwrap();
    let mut late = net.machine(0, Restored::default());
    let mut weak = second.clone();
    weak.signatures.signatures_mut().truncate(2);
    assert!(matches!(
        late.handle_certified(weak).outcome,
        CertifiedOutcome::Invalid(keel_types::Error::InsufficientStake { .. })
    ));
    let r = late.handle_certified(second.clone());
    assert_eq!(r.outcome, CertifiedOutcome::Adopted);
    assert_eq!(certified(&r.actions), Some(second.clone()));
    assert_eq!(
        late.handle_certified(second.clone()).outcome,
        CertifiedOutcome::Stale
    );
    // Below the adopted checkpoint nothing is signed; at its height the node checks and signs
    // it; the next checkpoint chains onto it.
    assert_eq!(
        late.handle_executed(executed(K)).outcome,
        ExecutedOutcome::AlreadyKnown
    );
    assert_eq!(
        late.handle_executed(executed(2 * K)).outcome,
        ExecutedOutcome::Signed { sequence: 2 }
    );
    let r = late.handle_executed(executed(3 * K));
    let s = broadcast(&r.actions);
    assert_eq!(
        (s.checkpoint.sequence, s.checkpoint.previous),
        (3, second.checkpoint.digest())
    );
}

#[test]
fn a_node_that_missed_a_checkpoint_signs_nothing_until_it_learns_it() {
    let net = net(4);
    let mut others = net.machines(1..4);
    run_round(&mut others, K);
    // Validator 0 (re)starts past height K without having built checkpoint 1.
    let mut m = net.machine(0, Restored::default());
    assert_eq!(
        m.handle_executed(executed(2 * K)).outcome,
        ExecutedOutcome::Gap {
            tip_height: Height(0)
        }
    );
    // The others' signatures for checkpoint 2 still certify it here.
    let sigs: Vec<_> = others
        .iter_mut()
        .map(|o| broadcast(&o.handle_executed(executed(2 * K)).actions))
        .collect();
    for s in sigs {
        m.handle_signature(s);
    }
    assert_eq!(m.certified_sequence(), 2);
    let r = m.handle_executed(executed(3 * K));
    assert_eq!(r.outcome, ExecutedOutcome::Signed { sequence: 3 });
}

#[test]
fn a_restarted_node_resumes_from_its_store_and_does_not_sign_again() {
    let net = net(4);
    let own = net.signed(0, executed(K));
    let mut restarted = net.machine(
        0,
        Restored {
            certified: None,
            own: Some(own.clone()),
        },
    );
    assert_eq!(restarted.tip(), &own.checkpoint);
    assert_eq!(
        restarted.uncertified_own(),
        Some(&own),
        "sent again until certified"
    );
    assert_eq!(
        restarted.handle_executed(executed(K)).outcome,
        ExecutedOutcome::AlreadyKnown
    );
    // Its restored signature still counts: two peers complete the quorum.
    for s in net.first_signatures(1..3) {
        restarted.handle_signature(s);
    }
    assert_eq!(restarted.certified_sequence(), 1);
    assert_eq!(restarted.uncertified_own(), None);
}

#[test]
fn a_certificate_contradicting_own_execution_is_adopted_and_reported() {
    let net = net(4);
    let mut m = net.machine(0, Restored::default());
    m.handle_executed(executed_with_root(K, Digest::of_bytes(b"diverged")));
    let mut actions = Vec::new();
    for s in net.first_signatures(1..4) {
        actions.extend(m.handle_signature(s).actions);
    }
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, CheckpointAction::Diverged { sequence: 1, .. }))
    );
    assert_eq!(
        m.tip().state_root,
        executed(K).state_root,
        "the quorum wins"
    );
}

#[test]
fn a_node_behind_its_peers_checks_its_execution_against_their_certificate() {
    let net = net(4);
    let peers = net.first_signatures(1..4);
    let mut behind = net.machine(0, Restored::default());
    let mut diverged = net.machine(0, Restored::default());
    for s in &peers {
        behind.handle_signature(s.clone());
        diverged.handle_signature(s.clone());
    }
    assert_eq!(behind.certified_sequence(), 1, "certified before executing");
    let r = behind.handle_executed(executed(K));
    assert_eq!(r.outcome, ExecutedOutcome::Signed { sequence: 1 });
    let own = match r.actions.as_slice() {
        [CheckpointAction::PersistOwn(own)] => own.clone(),
        other => panic!("stored, not broadcast: {other:?}"),
    };
    assert_eq!(
        own.checkpoint,
        behind.latest_certified().unwrap().checkpoint
    );
    assert_eq!(own.verify(&net.committee, CHAIN), Ok(()));
    assert_eq!(behind.signed_sequence(), Some(1));
    assert_eq!(
        behind.handle_executed(executed(K)).outcome,
        ExecutedOutcome::AlreadyKnown,
        "signed once"
    );
    let r = diverged.handle_executed(executed_with_root(K, Digest::of_bytes(b"other")));
    assert_eq!(r.outcome, ExecutedOutcome::AlreadyKnown);
    assert!(matches!(
        r.actions.as_slice(),
        [CheckpointAction::Diverged { sequence: 1, .. }]
    ));
    assert_eq!(diverged.signed_sequence(), None);
}

#[test]
fn signatures_behind_the_tip_fall_out_while_certification_stalls() {
    let net = net(4);
    let mut m = net.machine(0, Restored::default());
    // Validator 1 signs each checkpoint; no quorum ever forms (the others are silent).
    let mut one = net.machine(1, Restored::default());
    for sequence in 1..=10u64 {
        let h = sequence * K;
        let s = broadcast(&one.handle_executed(executed(h)).actions);
        m.handle_executed(executed(h));
        assert_eq!(m.handle_signature(s).outcome, SignatureOutcome::Added);
        assert!(
            m.kept_signatures() <= 2 * 2 * 4,
            "window 2, four validators"
        );
    }
    assert_eq!(m.certified_sequence(), 0);
    // Kept: sequences 9 and 10, two signatures each (own and validator 1's).
    assert_eq!(m.kept_signatures(), 4);
    let old = net.signed(2, executed(K));
    assert_eq!(m.handle_signature(old).outcome, SignatureOutcome::Stale);
}

/// The checkpoint ending the epoch was certified by the peers before this node executed its
/// block: the node checks and signs it, then moves to the next committee all the same, and
/// signs the next epoch's checkpoints with its rotated key.
#[test]
fn a_node_behind_at_an_epoch_end_moves_to_the_next_committee_with_its_next_key() {
    let net = net(4);
    let rotated = Arc::new(KeyPair::from_seed(&[42; 32]));
    let mut validators = net.committee.validators().to_vec();
    validators[0].protocol_key = rotated.public();
    let next = Committee::new(keel_types::Epoch(net.committee.epoch().0 + 1), validators).unwrap();
    let mut end = executed(K);
    end.epoch_end = Some(next.clone());
    let peers: Vec<CheckpointSignature> = (1..4).map(|i| net.signed(i, end.clone())).collect();
    let mut behind = net.machine(0, Restored::default());
    for s in &peers {
        behind.handle_signature(s.clone());
    }
    assert_eq!(behind.certified_sequence(), 1, "certified before executing");
    behind.set_next_key(rotated.clone());
    let r = behind.handle_executed(end);
    assert_eq!(r.outcome, ExecutedOutcome::Signed { sequence: 1 });
    // The epoch-ending checkpoint is signed with the old key, for the old committee.
    let own = match r.actions.as_slice() {
        [CheckpointAction::PersistOwn(own)] => own.clone(),
        other => panic!("stored, not broadcast: {other:?}"),
    };
    assert_eq!(own.verify(&net.committee, CHAIN), Ok(()));
    // The next one is of the next epoch, signed with the rotated key.
    assert_eq!(behind.me(), Some(ValidatorIndex(0)));
    let s = broadcast(&behind.handle_executed(executed(2 * K)).actions);
    assert_eq!(s.checkpoint.epoch, next.epoch());
    assert_eq!(s.verify(&next, CHAIN), Ok(()));
}
