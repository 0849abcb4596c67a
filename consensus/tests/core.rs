//! Direct tests of the core, one replica at a time, on the keel-types fixtures: signed
//! messages leave only after their safety data is persisted; the precheck refuses what it
//! must without any signature; the payload validator sees only the proposal the core is about
//! to vote for, and its refusal means no vote; the leader pulls at most `max_block_proofs`.

mod common;

use common::*;
use keel_consensus::{
    Action, ConsensusMessage, CoreConfig, Error, Input, LeaderElection, Verified, VoteAggregator,
    VoteOutcome, verify_block,
};
use keel_types::{
    Block, Digest, Epoch, QuorumCertificate, Round, Signature, SignedBlock, Timeout, TimestampMs,
    Uncached, ValidatorIndex, Vote, VoteData,
};

/// A proposal with an all-zero signature: no verification could pass it.
fn junk_proposal(author: ValidatorIndex, round: u64, payload: usize) -> SignedBlock {
    SignedBlock {
        block: Block {
            epoch: Epoch(1),
            round: Round(round),
            author,
            parent_qc: QuorumCertificate::genesis(Epoch(1), CHAIN),
            timeout_cert: None,
            failed_leaders: vec![],
            payload: (0..payload as u64).map(junk_proof).collect(),
            timestamp: TimestampMs(7),
        },
        signature: Signature([0; 64]),
    }
}

fn junk_vote(author: ValidatorIndex, round: u64) -> ConsensusMessage {
    ConsensusMessage::Vote(Vote {
        data: VoteData {
            epoch: Epoch(1),
            round: Round(round),
            block: Digest::of_bytes(b"junk"),
        },
        author,
        signature: Signature([0; 64]),
    })
}

fn junk_timeout(author: ValidatorIndex, round: u64) -> ConsensusMessage {
    ConsensusMessage::Timeout(Timeout {
        epoch: Epoch(1),
        round: Round(round),
        high_qc: QuorumCertificate::genesis(Epoch(1), CHAIN),
        author,
        signature: Signature([0; 64]),
    })
}

// (i) Durable before visible.

#[test]
fn votes_leave_only_after_their_safety_data_is_persisted() {
    let f = Fixture::new();
    let mut core = f.accepting();
    for block in f.chain(3) {
        let actions = core.handle(NOW, f.verified(&block));
        let (at_once, released) = signed_messages(&actions);
        assert!(
            at_once.is_empty(),
            "round {}: signed before persisting: {at_once:?}",
            block.block.round
        );
        assert_eq!(votes_in(&released), vec![block.block.round]);
    }
    assert_eq!(core.stats().votes, 3);
}

#[test]
fn timeouts_leave_only_after_their_safety_data_is_persisted() {
    let f = Fixture::new();
    let mut core = f.accepting();
    // Twice: the first expiry signs the timeout, the second re-broadcasts it.
    for _ in 0..2 {
        let actions = core.handle(
            NOW,
            Input::Timer {
                round: core.round(),
            },
        );
        let (at_once, released) = signed_messages(&actions);
        assert!(at_once.is_empty(), "signed before persisting: {at_once:?}");
        assert!(
            matches!(released.as_slice(), [ConsensusMessage::Timeout(t)] if t.round == Round(1)),
            "{released:?}"
        );
    }
    // Timeouts from others that push this replica to time out too (more than 1/3 of stake).
    let f = Fixture::new();
    let mut core = f.accepting();
    let mut all = Vec::new();
    for i in 1..3u32 {
        all.extend(core.handle(NOW, f.verified_timeout(i, 1, f.genesis_qc())));
    }
    let (at_once, released) = signed_messages(&all);
    assert!(at_once.is_empty(), "signed before persisting: {at_once:?}");
    assert!(
        released
            .iter()
            .any(|m| matches!(m, ConsensusMessage::Timeout(t) if t.author == ME)),
        "the replica joined the timeout: {released:?}"
    );
}

// (ii) The precheck: no signature needed to refuse.

#[test]
fn precheck_refuses_without_verifying_anything() {
    let f = Fixture::new();
    let config = CoreConfig {
        max_block_proofs: 2,
        ..CoreConfig::default()
    };
    let mut core = f.core(ME, config, Recording::default());
    assert_eq!(core.round(), Round(1));
    let leader = f.leader.leader(Round(1));
    let other = ValidatorIndex(3);
    assert_ne!(leader, other);

    // A non-leader's proposal.
    let p = ConsensusMessage::Proposal(junk_proposal(other, 1, 0));
    assert_eq!(
        core.precheck(other, &p),
        Err(Error::NotLeader {
            round: Round(1),
            author: other,
            leader
        })
    );
    // The leader's proposal, from someone else.
    let p = ConsensusMessage::Proposal(junk_proposal(leader, 1, 0));
    assert_eq!(
        core.precheck(other, &p),
        Err(Error::WrongSender {
            from: other,
            author: leader
        })
    );
    // An oversized payload.
    let p = ConsensusMessage::Proposal(junk_proposal(leader, 1, 3));
    assert_eq!(
        core.precheck(leader, &p),
        Err(Error::PayloadTooLarge { len: 3, limit: 2 })
    );
    // The precheck verifies nothing: a junk-signed proposal that breaks no rule passes.
    let p = ConsensusMessage::Proposal(junk_proposal(leader, 1, 2));
    assert_eq!(core.precheck(leader, &p), Ok(()));

    // A replayed proposal of an older round, once the replica has moved on.
    let chain = f.chain(3);
    for block in &chain {
        core.handle(NOW, f.verified(block));
    }
    assert_eq!(core.round(), Round(3));
    let old = ConsensusMessage::Proposal(junk_proposal(leader, 1, 0));
    assert_eq!(
        core.precheck(leader, &old),
        Err(Error::Stale {
            round: Round(1),
            current: Round(3)
        })
    );
    let replayed = ConsensusMessage::Proposal(chain[0].clone());
    assert!(matches!(
        core.precheck(leader, &replayed),
        Err(Error::Stale { .. })
    ));
    // Far ahead is allowed for proposals (catching up), but not for votes and timeouts.
    let window = CoreConfig::default().max_future_rounds;
    let far = 3 + window + 1;
    let far_leader = f.leader.leader(Round(far));
    let p = ConsensusMessage::Proposal(junk_proposal(far_leader, far, 0));
    assert_eq!(core.precheck(far_leader, &p), Ok(()));
    assert!(matches!(
        core.precheck(other, &junk_vote(other, far)),
        Err(Error::TooFarAhead { .. })
    ));
    assert!(matches!(
        core.precheck(other, &junk_timeout(other, far)),
        Err(Error::TooFarAhead { .. })
    ));
    // Votes: sender is author, and not older than the previous round.
    assert_eq!(core.precheck(other, &junk_vote(other, 2)), Ok(()));
    assert!(matches!(
        core.precheck(other, &junk_vote(other, 1)),
        Err(Error::Stale { .. })
    ));
    assert!(matches!(
        core.precheck(leader, &junk_vote(other, 3)),
        Err(Error::WrongSender { .. })
    ));
    // Timeouts: stale ones pass (the core answers them with its TC); sender is author.
    assert_eq!(core.precheck(other, &junk_timeout(other, 1)), Ok(()));
    assert!(matches!(
        core.precheck(leader, &junk_timeout(other, 3)),
        Err(Error::WrongSender { .. })
    ));
}

// (iii) The validator sees only the proposal the core is about to vote for.

#[test]
fn the_validator_sees_only_the_current_leaders_proposal() {
    let f = Fixture::new();
    let mut core = f.accepting();
    let chain = f.chain(3);
    for block in &chain {
        core.handle(NOW, f.verified(block));
    }
    assert_eq!(core.payload().validated, vec![Round(1), Round(2), Round(3)]);

    // A replayed old proposal, even handed to the core as verified.
    let replay = core.handle(
        NOW,
        Input::Message(Box::new(Verified::own(ConsensusMessage::Proposal(
            chain[0].clone(),
        )))),
    );
    // A current-round proposal by a validator that does not lead the round.
    let intruder = ValidatorIndex(1);
    assert_ne!(f.leader.leader(Round(3)), intruder);
    let mut block = f.block_by(intruder, 3, f.qc_for(&chain[1]));
    block.timestamp = TimestampMs(500);
    let block = block.sign(&f.keys[1], CHAIN);
    let not_leader = core.handle(
        NOW,
        Input::Message(Box::new(Verified::own(ConsensusMessage::Proposal(block)))),
    );
    assert_eq!(
        core.payload().validated,
        vec![Round(1), Round(2), Round(3)],
        "an old or non-leader proposal reached the validator"
    );
    assert!(!any_vote(&replay) && !any_vote(&not_leader));
}

#[test]
fn the_validator_is_not_asked_when_the_safety_rules_refuse() {
    let f = Fixture::new();
    let mut core = f.accepting();
    // The replica times out in round 1, then round 1's proposal arrives: it may not vote.
    core.handle(NOW, Input::Timer { round: Round(1) });
    let actions = core.handle(NOW, f.verified(&f.chain(1)[0]));
    assert!(!any_vote(&actions));
    assert!(core.payload().validated.is_empty());
}

// (iv) A refused payload gets no vote, on either path to a vote.

#[test]
fn a_refused_payload_gets_no_vote() {
    let f = Fixture::new();
    let mut core = f.core(ME, CoreConfig::default(), Recording::default());
    let chain = f.chain(2);
    for block in &chain {
        let actions = core.handle(NOW, f.verified(block));
        assert!(!any_vote(&actions), "voted for a refused payload");
    }
    assert_eq!(core.payload().validated, vec![Round(1), Round(2)]);
    assert_eq!(core.stats().votes, 0);
    assert_eq!(core.safety_data().last_voted_round, Round(0));
}

#[test]
fn a_proposal_waiting_for_its_parent_is_voted_for_through_the_validator() {
    for accept in [true, false] {
        let f = Fixture::new();
        let payload = Recording {
            accept,
            ..Recording::default()
        };
        let mut core = f.core(ME, CoreConfig::default(), payload);
        let chain = f.chain(2);
        // Round 2's proposal arrives first: its parent is fetched, nothing is voted yet.
        let actions = core.handle(NOW, f.verified(&chain[1]));
        assert!(actions.iter().any(
            |a| matches!(a, Action::FetchBlock { digest, .. } if *digest == chain[0].digest())
        ));
        assert!(!any_vote(&actions));
        assert!(core.payload().validated.is_empty());
        // The parent arrives: the waiting proposal is voted for, through the validator.
        let parent =
            verify_block(chain[0].clone(), &f.committee, CHAIN, &mut Uncached).expect("verifies");
        let actions = core.handle(NOW, Input::BlocksFetched(vec![parent]));
        assert_eq!(core.payload().validated, vec![Round(2)]);
        let (at_once, released) = signed_messages(&actions);
        assert!(at_once.is_empty(), "signed before persisting: {at_once:?}");
        let expected = if accept { vec![Round(2)] } else { vec![] };
        assert_eq!(votes_in(&released), expected, "accept = {accept}");
    }
}

// The batch bytes a block may order.

/// A properly signed proposal of round 1 ordering two batches of 60 bytes each.
fn heavy_proposal(f: &Fixture) -> SignedBlock {
    let leader = f.leader.leader(Round(1));
    let mut block = f.block_by(leader, 1, f.genesis_qc());
    block.payload = (0..2)
        .map(|s| {
            let mut proof = junk_proof(s);
            proof.info.num_bytes = 60;
            proof
        })
        .collect();
    block.sign(&f.keys[leader.as_usize()], CHAIN)
}

#[test]
fn a_proposal_ordering_too_many_batch_bytes_is_refused_unverified_and_gets_no_vote() {
    let f = Fixture::new();
    let config = CoreConfig {
        max_block_bytes: 100,
        ..CoreConfig::default()
    };
    let accepting = Recording {
        accept: true,
        ..Recording::default()
    };
    let mut core = f.core(ME, config, accepting);
    let heavy = heavy_proposal(&f);
    let leader = heavy.block.author;
    assert_eq!(
        core.precheck(leader, &ConsensusMessage::Proposal(heavy.clone())),
        Err(Error::PayloadTooHeavy {
            bytes: 120,
            limit: 100
        })
    );
    // Had it reached the core verified (an embedder skipping the precheck), still no vote,
    // and the payload validator (which would load the batches) is never asked.
    let actions = core.handle(NOW, f.verified(&heavy));
    assert!(
        !any_vote(&actions),
        "voted for 120 bytes over a limit of 100"
    );
    assert!(core.payload().validated.is_empty());
    // Within the limit, the same proposal is voted for.
    let mut roomy = f.core(
        ME,
        CoreConfig {
            max_block_bytes: 120,
            ..CoreConfig::default()
        },
        Recording {
            accept: true,
            ..Recording::default()
        },
    );
    assert_eq!(
        roomy.precheck(leader, &ConsensusMessage::Proposal(heavy.clone())),
        Ok(())
    );
    assert!(any_vote(&roomy.handle(NOW, f.verified(&heavy))));
}

#[test]
fn the_leader_pulls_within_max_block_bytes() {
    let f = Fixture::new();
    let config = CoreConfig {
        max_block_bytes: 100,
        ..CoreConfig::default()
    };
    // The source returns five proofs of 30 bytes whatever it is asked: the core keeps three.
    let payload = Recording {
        accept: true,
        supply: 5,
        proof_bytes: 30,
        ..Recording::default()
    };
    let (core, actions) = f.started(f.leader.leader(Round(1)), config, payload);
    let proposal = *proposals_in(&actions)
        .first()
        .expect("the leader of round 1 proposes at once");
    assert_eq!(core.payload().pulled_bytes, vec![100]);
    assert_eq!(proposal.block.payload.len(), 3);
}

// The leader's payload limit.

#[test]
fn the_leader_pulls_at_most_max_block_proofs() {
    let f = Fixture::new();
    let config = CoreConfig {
        max_block_proofs: 3,
        ..CoreConfig::default()
    };
    // The source returns more than asked: the core keeps the limit anyway.
    let payload = Recording {
        accept: true,
        supply: 5,
        ..Recording::default()
    };
    let (mut core, actions) = f.started(f.leader.leader(Round(1)), config, payload);
    let proposal = *proposals_in(&actions)
        .first()
        .expect("the leader of round 1 proposes at once");
    assert_eq!(core.payload().pulled, vec![3]);
    assert_eq!(proposal.block.payload.len(), 3);
    assert_eq!(core.payload_mut().pulled.len(), 1);
}

/// The leader of round 1 (which follows the genesis QC), with a source that has no payload.
fn idle_leader(f: &Fixture) -> (TestCore, Vec<Action>) {
    let (config, payload) = idle_setup();
    f.started(f.leader.leader(Round(1)), config, payload)
}

#[test]
fn an_idle_leader_waits_for_payload_then_proposes_an_empty_block() {
    let f = Fixture::new();
    let (mut core, actions) = idle_leader(&f);
    assert!(
        proposals_in(&actions).is_empty(),
        "proposed at once: {actions:?}"
    );
    assert!(
        actions.contains(&Action::ProposeAfter {
            round: Round(1),
            after_ms: 500
        }),
        "{actions:?}"
    );
    // The wait ends: it proposes, even with nothing to carry.
    let actions = core.handle(
        TimestampMs(NOW.0 + 500),
        Input::ProposeTimer { round: Round(1) },
    );
    let proposals = proposals_in(&actions);
    assert_eq!(proposals.len(), 1, "{actions:?}");
    assert!(proposals[0].block.payload.is_empty());
}

/// An idle leader waits longer than the shortest adapted timeout: its own round timer must
/// outlast the wait, or it times out in its round before proposing (and then may not propose).
#[test]
fn an_idle_leaders_own_timer_outlasts_its_wait() {
    let f = Fixture::new();
    let (mut config, payload) = idle_setup();
    config.pacemaker = keel_consensus::PacemakerConfig::fixed(200);
    let (mut core, actions) = f.started(f.leader.leader(Round(1)), config, payload);
    let timer = actions.iter().find_map(|a| match a {
        Action::SetTimer { round, after_ms } if *round == Round(1) => Some(*after_ms),
        _ => None,
    });
    assert_eq!(
        timer,
        Some(700),
        "200 ms plus the 500 ms idle allowance: {actions:?}"
    );
    let actions = core.handle(
        TimestampMs(NOW.0 + 500),
        Input::ProposeTimer { round: Round(1) },
    );
    assert_eq!(proposals_in(&actions).len(), 1, "{actions:?}");
}

#[test]
fn payload_arriving_ends_an_idle_leaders_wait() {
    let f = Fixture::new();
    let (mut core, _) = idle_leader(&f);
    // Nothing happens on a notification while there is still nothing to propose...
    core.payload_mut().supply = 2;
    core.payload_mut().idle = false;
    let actions = core.handle(TimestampMs(NOW.0 + 10), Input::PayloadAvailable);
    let proposals = proposals_in(&actions);
    assert_eq!(proposals.len(), 1, "payload ended the wait: {actions:?}");
    assert_eq!(proposals[0].block.payload.len(), 2);
    // ...and the leader proposes once per round: the timer that fires later does nothing.
    let later = core.handle(
        TimestampMs(NOW.0 + 500),
        Input::ProposeTimer { round: Round(1) },
    );
    assert!(proposals_in(&later).is_empty(), "{later:?}");
}

#[test]
fn a_leader_does_not_wait_while_ordered_payload_awaits_commit() {
    let f = Fixture::new();
    // Round 1's block carries payload; the leader of round 2 must extend it at once, or that
    // payload would wait for the idle timer before it can commit.
    let author = f.leader.leader(Round(1));
    let mut block = f.block_by(author, 1, f.genesis_qc());
    block.payload = vec![junk_proof(1)];
    let b1 = block.sign(&f.keys[author.as_usize()], CHAIN);
    let mut core = f.idle_core_leading(2);
    core.handle(NOW, f.verified(&b1));
    let actions = f.all_votes_for(&mut core, &b1);
    assert_eq!(core.round(), Round(2), "the QC for round 1 formed");
    assert_eq!(
        proposals_in(&actions).len(),
        1,
        "the leader waited although its parent carries payload: {actions:?}"
    );
}

#[test]
fn a_leader_does_not_wait_when_its_qc_just_committed_payload() {
    let f = Fixture::new();
    // B1 carries payload, B2 is empty. The leader of round 3 forms B2's QC, which commits B1;
    // the others learn of that commit only from its proposal, so it must not wait.
    let a1 = f.leader.leader(Round(1));
    let mut block = f.block_by(a1, 1, f.genesis_qc());
    block.payload = vec![junk_proof(1)];
    let b1 = block.sign(&f.keys[a1.as_usize()], CHAIN);
    let b2 = f.proposal(2, f.qc_for(&b1));
    let mut core = f.idle_core_leading(3);
    core.handle(NOW, f.verified(&b1));
    core.handle(NOW, f.verified(&b2));
    let actions = f.all_votes_for(&mut core, &b2);
    assert_eq!(core.round(), Round(3), "the QC for round 2 formed");
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Commit(c) if c.iter().any(|b| b.block.digest() == b1.digest()))
        ),
        "B2's QC commits B1: {actions:?}"
    );
    assert_eq!(
        proposals_in(&actions).len(),
        1,
        "the leader waited although its QC just committed payload: {actions:?}"
    );
}

#[test]
fn a_replica_far_behind_catches_up_from_a_far_ahead_timeouts_high_qc() {
    // The others are stuck in round `far`, entered on a QC: no proposal and no TC to learn
    // from, only their timeouts, whose high QC must reach the core despite the window.
    let f = Fixture::new();
    let mut core = f.accepting();
    let far = 1 + CoreConfig::default().max_future_rounds + 50;
    let data = VoteData {
        epoch: f.committee.epoch(),
        round: Round(far - 1),
        block: Digest::of_bytes(b"a block this replica never saw"),
    };
    let mut votes = VoteAggregator::default();
    let qc = (1..4u32)
        .find_map(|i| {
            let vote = Vote::new(data, ValidatorIndex(i), &f.keys[i as usize], CHAIN);
            match votes.add(&vote, &f.committee) {
                VoteOutcome::NewQc(qc) => Some(qc),
                _ => None,
            }
        })
        .expect("three of four votes form a QC");
    let sender = ValidatorIndex(2);
    let timeout = ConsensusMessage::Timeout(Timeout::new(
        f.committee.epoch(),
        Round(far),
        qc,
        sender,
        &f.keys[2],
        CHAIN,
    ));
    assert_eq!(core.precheck(sender, &timeout), Ok(()));
    let verified = timeout.verify(&f.committee, CHAIN).unwrap();
    let actions = core.handle(NOW, Input::Message(Box::new(verified)));
    assert_eq!(core.round(), Round(far), "adopted the timeout's high QC");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::FetchBlock { digest, .. } if *digest == data.block)),
        "asks for the certified block it lacks: {actions:?}"
    );
    // A far-ahead timeout whose high QC would not move this replica is still refused.
    assert!(matches!(
        core.precheck(sender, &junk_timeout(sender, far + 200)),
        Err(Error::TooFarAhead { .. })
    ));
}

// The record of failed leaders.

/// Round 2's proposal after round 1 timed out, recording `failed` as round 1's leader; whether
/// replica 0 (whose round-robin election is final for every round) votes for it.
fn votes_for_record(failed: Option<ValidatorIndex>) -> bool {
    let f = Fixture::new();
    let mut core = f.accepting();
    core.handle(NOW, Input::Start);
    let mut timeouts = keel_consensus::TimeoutAggregator::default();
    let tc = (1..4u32)
        .find_map(
            |i| match timeouts.add(&f.timeout(i, 1, f.genesis_qc()), &f.committee) {
                keel_consensus::TimeoutOutcome::NewTc(tc) => Some(tc),
                _ => None,
            },
        )
        .expect("three of four timeouts form a TC");
    let author = f.leader.leader(Round(2));
    let mut block = f.block_by(author, 2, f.genesis_qc());
    block.timeout_cert = Some(tc);
    block.failed_leaders = vec![failed];
    let block = block.sign(&f.keys[author.as_usize()], CHAIN);
    let actions = core.handle(NOW, f.verified(&block));
    let (_, released) = signed_messages(&actions);
    votes_in(&released) == vec![Round(2)]
}

#[test]
fn a_replica_votes_only_for_a_true_record_of_failed_leaders() {
    let f = Fixture::new();
    let leader_1 = f.leader.leader(Round(1));
    let other = ValidatorIndex((leader_1.0 + 1) % 4);
    assert!(votes_for_record(Some(leader_1)), "the true record");
    assert!(
        votes_for_record(None),
        "a proposer whose history does not decide round 1"
    );
    assert!(!votes_for_record(Some(other)), "a false record");
}

/// A leader that proposed and crashed before voting for its own block (so its last voted
/// round is still below the round) restarts within the round: it must not propose a second
/// block there. The proposal's round is persisted before the proposal leaves.
#[test]
fn a_leader_restarted_within_its_round_does_not_propose_again() {
    let f = Fixture::new();
    let leader = f.leader.leader(Round(1));
    let accepting = || Recording {
        accept: true,
        ..Recording::default()
    };
    let (_, actions) = f.started(leader, CoreConfig::default(), accepting());
    let persisted = actions
        .iter()
        .find_map(|a| match a {
            Action::PersistSafety { data, then } if !proposals_in(then).is_empty() => {
                Some(data.clone())
            }
            _ => None,
        })
        .expect("the proposal leaves after a safety write");
    assert_eq!(persisted.last_proposed_round, Round(1));
    assert!(
        persisted.last_voted_round < Round(1),
        "it has not voted yet"
    );
    // The restart, from what was persisted.
    let mut recovery = keel_consensus::RecoveryData::genesis(&f.committee, CHAIN);
    recovery.safety = persisted;
    let mut restarted = f.build(leader, CoreConfig::default(), accepting(), recovery);
    let actions = restarted.handle(NOW, Input::Start);
    assert_eq!(restarted.round(), Round(1));
    assert!(
        proposals_in(&actions).is_empty(),
        "a second proposal in round 1: {actions:?}"
    );
}
