//! The amnesia guard, one replica at a time: a replica that starts without its safety data
//! signs nothing until validators holding more than 2/3 of the stake have answered with their
//! certificates (each counted once, members only), then signs no vote or proposal up to
//! `M + 3` and no timeout up to `M + 2`, `M` being the highest certified round it learnt; at
//! genesis it starts (round 1 ends on a timeout certificate). See `keel_consensus::amnesia`.

mod common;

use common::*;
use keel_consensus::{
    Action, CertificateAnswer, ConsensusMessage, CoreConfig, Input, RecoveryData, SafetyData,
    TimeoutAggregator, TimeoutOutcome,
};
use keel_types::{QuorumCertificate, Round, SignedBlock, TimeoutCertificate, ValidatorIndex};

fn accepting() -> Recording {
    Recording {
        accept: true,
        ..Recording::default()
    }
}

/// [`ME`]'s core started from `recovery`, with the actions of its start.
fn start(f: &Fixture, recovery: RecoveryData) -> (TestCore, Vec<Action>) {
    let mut core = f.build(ME, CoreConfig::default(), accepting(), recovery);
    let actions = core.handle(NOW, Input::Start);
    (core, actions)
}

/// [`ME`]'s core, amnesiac at genesis, started.
fn amnesiac(f: &Fixture) -> (TestCore, Vec<Action>) {
    start(f, RecoveryData::amnesiac(&f.committee, CHAIN))
}

/// `from`'s verified answer carrying `high_qc` and `last_tc`.
fn answer(
    f: &Fixture,
    from: u32,
    high_qc: QuorumCertificate,
    last_tc: Option<TimeoutCertificate>,
) -> Input {
    let verified = CertificateAnswer { high_qc, last_tc }
        .verify(&f.committee, CHAIN)
        .expect("real certificates verify");
    Input::PeerCertificates {
        from: ValidatorIndex(from),
        answer: Box::new(verified),
    }
}

/// A TC for `round` from validators 1 to 3, all reporting `high_qc`.
fn tc(f: &Fixture, round: u64, high_qc: &QuorumCertificate) -> TimeoutCertificate {
    let mut timeouts = TimeoutAggregator::default();
    for i in 1..4u32 {
        let t = f.timeout(i, round, high_qc.clone());
        if let TimeoutOutcome::NewTc(tc) = timeouts.add(&t, &f.committee) {
            return tc;
        }
    }
    panic!("three of four timeouts form a TC");
}

fn tc_message(f: &Fixture, tc: TimeoutCertificate) -> Input {
    let message = ConsensusMessage::TimeoutCertificate(tc)
        .verify(&f.committee, CHAIN)
        .expect("a TC verifies");
    Input::Message(Box::new(message))
}

/// The leader of `round`'s proposal on `parent_qc` after the timeout certificate `tc`.
fn proposal_after_tc(
    f: &Fixture,
    round: u64,
    parent_qc: QuorumCertificate,
    tc: TimeoutCertificate,
) -> SignedBlock {
    use keel_consensus::LeaderElection;
    let author = f.leader.leader(Round(round));
    let mut block = f.block_by(author, round, parent_qc);
    block.failed_leaders = block
        .skipped_rounds()
        .map(|r| Some(f.leader.leader(r)))
        .collect();
    block.timeout_cert = Some(tc);
    block.sign(&f.keys[author.as_usize()], CHAIN)
}

fn timer(core: &mut TestCore) -> Vec<Action> {
    let round = core.round();
    core.handle(NOW, Input::Timer { round })
}

/// Whether `actions` sign anything: a vote, a timeout or a proposal.
fn signs_anything(actions: &[Action]) -> bool {
    let (at_once, released) = signed_messages(actions);
    !at_once.is_empty() || !released.is_empty() || !proposals_in(actions).is_empty()
}

fn timeouts_in(actions: &[Action]) -> Vec<Round> {
    let (_, released) = signed_messages(actions);
    released
        .iter()
        .filter_map(|m| match m {
            ConsensusMessage::Timeout(t) => Some(t.round),
            _ => None,
        })
        .collect()
}

fn requests(actions: &[Action]) -> Vec<Vec<ValidatorIndex>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RequestCertificates { to } => Some(to.clone()),
            _ => None,
        })
        .collect()
}

/// The safety data of the `PersistSafety` in `actions` that carries no message (the floor).
fn floor_write(actions: &[Action]) -> Option<&SafetyData> {
    actions.iter().find_map(|a| match a {
        Action::PersistSafety { data, then } if then.is_empty() => Some(data),
        _ => None,
    })
}

fn ids(v: &[u32]) -> Vec<ValidatorIndex> {
    v.iter().map(|i| ValidatorIndex(*i)).collect()
}

#[test]
fn an_amnesiac_replica_signs_nothing_before_a_quorum_answers() {
    let f = Fixture::new();
    let (mut core, actions) = amnesiac(&f);
    assert!(core.is_amnesiac());
    assert_eq!(requests(&actions), vec![ids(&[1, 2, 3])]);
    let mut all = actions;
    // It follows the chain (rounds advance, blocks are stored) without voting.
    for block in f.chain(3) {
        all.extend(core.handle(NOW, f.verified(&block)));
    }
    assert_eq!(core.round(), Round(3));
    // Its timer asks again instead of timing out.
    let expired = timer(&mut core);
    assert_eq!(requests(&expired), vec![ids(&[1, 2, 3])]);
    assert!(
        expired
            .iter()
            .any(|a| matches!(a, Action::SetTimer { round, .. } if *round == Round(3))),
        "the timer is re-armed: {expired:?}"
    );
    all.extend(expired);
    // More than 1/3 timing out does not make it join.
    for i in 1..3u32 {
        all.extend(core.handle(NOW, f.verified_timeout(i, 3, f.genesis_qc())));
    }
    // One answer besides its own: 2 of 4 is no quorum.
    all.extend(core.handle(NOW, answer(&f, 1, f.genesis_qc(), None)));
    assert!(core.is_amnesiac());
    let again = timer(&mut core);
    assert_eq!(
        requests(&again),
        vec![ids(&[2, 3])],
        "only the missing are asked"
    );
    all.extend(again);
    assert!(!signs_anything(&all), "signed while amnesiac: {all:?}");
    assert_eq!(
        (
            core.stats().votes,
            core.stats().timeouts,
            core.stats().proposals
        ),
        (0, 0, 0)
    );
}

#[test]
fn after_a_quorum_it_signs_only_above_two_rounds_past_the_highest_certificate() {
    let f = Fixture::new();
    let (mut core, _) = amnesiac(&f);
    let chain = f.chain(6);
    // It follows rounds 1 to 5 while amnesiac.
    for block in &chain[..5] {
        assert!(!signs_anything(&core.handle(NOW, f.verified(block))));
    }
    // Two answers (with its own, 3 of 4): the highest certificate is round 5's QC, so M = 5.
    let qc5 = f.qc_for(&chain[4]);
    let first = core.handle(NOW, answer(&f, 1, qc5.clone(), None));
    assert!(core.is_amnesiac() && floor_write(&first).is_none());
    let resolved = core.handle(NOW, answer(&f, 2, f.genesis_qc(), None));
    assert!(!core.is_amnesiac());
    let data = floor_write(&resolved).expect("the floor is persisted");
    assert_eq!(data.last_voted_round, Round(8), "M + 3");
    assert_eq!(core.safety_data().last_voted_round, Round(8));
    assert!(!signs_anything(&resolved));
    assert_eq!(core.round(), Round(6), "the answered QC was adopted");

    // Round 6 (M + 1): no vote, no timeout.
    assert!(!signs_anything(&core.handle(NOW, f.verified(&chain[5]))));
    assert!(!signs_anything(&timer(&mut core)));
    // Round 7 (M + 2): no vote, no timeout.
    let tc6 = tc(&f, 6, &qc5);
    assert!(!signs_anything(
        &core.handle(NOW, tc_message(&f, tc6.clone()))
    ));
    assert_eq!(core.round(), Round(7));
    let b7 = proposal_after_tc(&f, 7, qc5.clone(), tc6);
    assert!(!signs_anything(&core.handle(NOW, f.verified(&b7))));
    assert!(!signs_anything(&timer(&mut core)));
    // Round 8 (M + 3), which this replica leads: no proposal and no vote, but a timeout.
    let entered = core.handle(NOW, tc_message(&f, tc(&f, 7, &qc5)));
    assert_eq!(core.round(), Round(8));
    assert!(
        !signs_anything(&entered),
        "proposed in round 8: {entered:?}"
    );
    assert_eq!(timeouts_in(&timer(&mut core)), vec![Round(8)]);
    // Round 9: votes again.
    let tc8 = tc(&f, 8, &qc5);
    core.handle(NOW, tc_message(&f, tc8.clone()));
    let b9 = proposal_after_tc(&f, 9, qc5, tc8);
    let voted = core.handle(NOW, f.verified(&b9));
    let (_, released) = signed_messages(&voted);
    assert_eq!(votes_in(&released), vec![Round(9)]);
}

#[test]
fn duplicate_answers_from_one_sender_count_once() {
    let f = Fixture::new();
    let (mut core, _) = amnesiac(&f);
    for _ in 0..3 {
        let actions = core.handle(NOW, answer(&f, 1, f.genesis_qc(), None));
        assert!(floor_write(&actions).is_none());
    }
    assert!(
        core.is_amnesiac(),
        "one sender's stake counted more than once"
    );
    let actions = core.handle(NOW, answer(&f, 3, f.genesis_qc(), None));
    assert!(!core.is_amnesiac());
    assert!(floor_write(&actions).is_some());
}

#[test]
fn answers_from_non_members_are_ignored() {
    let f = Fixture::new();
    let (mut core, _) = amnesiac(&f);
    let qc = f.qc_for(&f.chain(2)[1]);
    for outsider in [4u32, 7, 1_000] {
        let actions = core.handle(NOW, answer(&f, outsider, qc.clone(), None));
        assert!(
            actions.is_empty(),
            "acted on a non-member's answer: {actions:?}"
        );
    }
    core.handle(NOW, answer(&f, 1, f.genesis_qc(), None));
    assert!(core.is_amnesiac(), "a non-member's answer counted");
    assert_eq!(core.stats().dropped, 3);
    assert_eq!(
        core.round(),
        Round(1),
        "a non-member's certificate was adopted"
    );
    core.handle(NOW, answer(&f, 2, f.genesis_qc(), None));
    assert!(!core.is_amnesiac());
}

#[test]
fn at_genesis_an_amnesiac_replica_starts_after_one_timed_out_round() {
    let f = Fixture::new();
    let (mut core, _) = amnesiac(&f);
    core.handle(NOW, answer(&f, 1, f.genesis_qc(), None));
    let resolved = core.handle(NOW, answer(&f, 2, f.genesis_qc(), None));
    let data = floor_write(&resolved).expect("the floor is persisted");
    assert_eq!(data.last_voted_round, Round(1));
    // Round 1: no vote (the leader may have been answered a different block before), but the
    // timeout, the same signed data whenever it is signed.
    let chain = f.chain(1);
    assert!(!signs_anything(&core.handle(NOW, f.verified(&chain[0]))));
    assert_eq!(timeouts_in(&timer(&mut core)), vec![Round(1)]);
    // Round 2, entered on round 1's TC: votes.
    let tc1 = tc(&f, 1, &f.genesis_qc());
    core.handle(NOW, tc_message(&f, tc1.clone()));
    let b2 = proposal_after_tc(&f, 2, f.genesis_qc(), tc1);
    let (_, released) = signed_messages(&core.handle(NOW, f.verified(&b2)));
    assert_eq!(votes_in(&released), vec![Round(2)]);
}

#[test]
fn a_restored_backups_safety_data_is_only_raised() {
    let f = Fixture::new();
    let mut recovery = RecoveryData::amnesiac(&f.committee, CHAIN);
    recovery.safety.last_voted_round = Round(20);
    let (mut core, _) = start(&f, recovery);
    core.handle(NOW, answer(&f, 1, f.genesis_qc(), None));
    let resolved = core.handle(NOW, answer(&f, 2, f.genesis_qc(), None));
    let data = floor_write(&resolved).expect("the floor is persisted");
    assert_eq!(data.last_voted_round, Round(20));
}

#[test]
fn every_replica_answers_with_its_highest_qc_and_last_tc() {
    let f = Fixture::new();
    let mut core = f.accepting();
    let chain = f.chain(3);
    for block in &chain {
        core.handle(NOW, f.verified(block));
    }
    let answered = core.certificate_answer();
    assert_eq!(answered.high_qc.round(), Round(2));
    assert_eq!(answered.last_tc, None);
    let tc3 = tc(&f, 3, &answered.high_qc);
    core.handle(NOW, tc_message(&f, tc3.clone()));
    let answered = core.certificate_answer();
    assert_eq!(answered.last_tc, Some(tc3));
    assert_eq!(answered.certified_round(), Round(3));
    // An amnesiac replica serves its answer too.
    let (amnesiac, _) = amnesiac(&f);
    assert_eq!(amnesiac.certificate_answer().high_qc, f.genesis_qc());
}

#[test]
fn a_replica_with_its_safety_data_never_asks() {
    let f = Fixture::new();
    let (mut core, started) = start(&f, RecoveryData::genesis(&f.committee, CHAIN));
    assert!(!core.is_amnesiac());
    assert!(requests(&started).is_empty());
    assert!(requests(&timer(&mut core)).is_empty());
    // Unsolicited answers change nothing.
    let qc = f.qc_for(&f.chain(2)[1]);
    assert!(core.handle(NOW, answer(&f, 1, qc, None)).is_empty());
    assert_eq!(core.round(), Round(1));
}
