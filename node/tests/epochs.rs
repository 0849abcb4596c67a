//! Reconfiguration with real processes under a steady load of signed transfers: operators vote
//! through the admin API, the epoch ends `change_delay_blocks` after the change is scheduled,
//! consensus restarts at round 0 with the new committee, and nothing stops committing.

mod common;

use common::{ACCOUNTS, Committee, read_key, submit_spread, transfers};
use keel_consensus::ConsensusMessage;
use keel_p2p::{
    AllowedPeers, EndpointConfig, Handler, Network, NetworkIdentity, Notification, Request,
    Response,
};
use keel_types::{
    Block, PublicKey, Round, SignedBlock, TimestampMs, ValidatorIndex, Vote, VoteData,
};
use serde_json::Value;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const GRACE_MS: u64 = 2_000;

fn admin(c: &Committee, i: usize, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", c.admin[i]);
    let request = match method {
        "GET" => c.http.get(url),
        "PUT" => c.http.put(url),
        "DELETE" => c.http.delete(url),
        _ => c.http.post(url),
    };
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let r = request.bearer_auth(&c.tokens[i]).send().unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

/// `n` validators with a short switch grace, started and ready.
fn start(n: usize) -> Committee {
    let mut c = Committee::create(n);
    for i in 0..n {
        c.edit_config(
            i,
            &[(
                "epoch_switch_grace_ms = 10000",
                &format!("epoch_switch_grace_ms = {GRACE_MS}"),
            )],
        );
        c.spawn(i);
    }
    for i in 0..n {
        c.wait_ready(i, Duration::from_secs(60));
    }
    c
}

/// Waits until `members` executed validator 0's current height and asserts their state roots
/// there are equal; returns the height.
fn assert_same_state(c: &Committee, members: &[usize]) -> u64 {
    let height = c.status(members[0])["executed_height"].as_u64().unwrap();
    let roots = common::roots_at(c, members, height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "roots differ at {height}: {roots:?}"
    );
    height
}

/// Waits until the removed validator has no connected peer (the members closed it out).
fn assert_disconnected(c: &Committee, removed: usize) {
    c.wait_for(
        Duration::from_millis(GRACE_MS * 5),
        "the removed validator to be disconnected",
        || c.status(removed)["peers"].as_u64() == Some(0),
    );
}

/// The bound on the longest stretch without a commit during a change.
fn assert_gap_within_bound(longest_gap: Duration) {
    assert!(
        longest_gap <= Duration::from_secs(2),
        "a commit gap of {} ms",
        longest_gap.as_millis()
    );
}

fn epoch_of(c: &Committee, i: usize) -> u64 {
    c.status(i)["epoch"].as_u64().unwrap()
}

/// Commit heights sampled every 50 ms on one validator, from a thread; the longest stretch
/// without a new commit is what the test reports and bounds.
struct GapWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Duration>>,
}

impl GapWatch {
    fn start(api: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let (mut last, mut since, mut longest) = (0u64, Instant::now(), Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{api}/v1/status")).send()
                    && let Ok(v) = r.json::<Value>()
                {
                    let h = v["committed_height"].as_u64().unwrap_or(0);
                    if h > last {
                        longest = longest.max(since.elapsed());
                        last = h;
                        since = Instant::now();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            longest.max(since.elapsed())
        });
        GapWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A steady load: one round of transfers from every account every `every`, to the listed
/// validators, until stopped (bounded by `rounds`).
fn load(c: &Committee, nodes: &[usize], rounds: u64, every: Duration, stop: &AtomicBool) -> u64 {
    let mut submitted = 0;
    for nonce in 0..rounds {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        submitted += submit_spread(c, nodes, &transfers(ACCOUNTS, nonce, 1)) as u64;
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    submitted
}

/// Votes for a change on validators `voters` and waits until the epoch after `from` starts on
/// `members`; returns (seconds from the vote scheduling it to the new epoch's first commit as
/// seen by polling, the new epoch's `started_after`).
fn change_epoch(
    c: &Committee,
    voters: &[usize],
    members: &[usize],
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (f64, u64) {
    let from = epoch_of(c, members[0]);
    let mut change = String::new();
    let mut transactions = Vec::new();
    for &v in voters {
        let (code, answer) = admin(c, v, method, path, body.clone());
        assert_eq!(code, 200, "vote on {v}: {answer}");
        assert_eq!(
            answer["effective_epoch"].as_u64(),
            Some(from + 1),
            "{answer}"
        );
        change = answer["change"].as_str().unwrap().to_string();
        if let Some(tx) = answer["transaction"].as_str() {
            transactions.push((v, tx.to_string()));
        }
        // Repeating the request is harmless: same change, no second counted vote.
        let (code, again) = admin(c, v, method, path, body.clone());
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["change"].as_str(), Some(change.as_str()));
    }
    // Scheduled once the votes execute.
    let mut scheduled_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    c.wait_for(
        Duration::from_secs(31),
        "the change to be scheduled",
        || {
            if Instant::now() > deadline {
                for (v, tx) in &transactions {
                    eprintln!(
                        "vote of {v}: {}",
                        c.get(*v, &format!("/v1/transactions/{tx}")).1
                    );
                }
                eprintln!(
                    "epoch: {}",
                    admin(c, members[0], "GET", "/admin/epoch", None).1
                );
                eprintln!("log 0: {}", c.log_tail(0));
            }
            let (_, e) = admin(c, members[0], "GET", "/admin/epoch", None);
            if e["epoch"].as_u64() != Some(from) {
                scheduled_at.get_or_insert(Instant::now());
                return true;
            }
            let found = e["scheduled"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x["change"].as_str() == Some(&change)));
            if found {
                scheduled_at.get_or_insert(Instant::now());
            }
            found
        },
    );
    let scheduled_at = scheduled_at.unwrap();
    let mut started_after = 0;
    c.wait_for(
        Duration::from_secs(60),
        "every member to start the next epoch",
        || {
            members.iter().all(|&m| {
                let (_, e) = admin(c, m, "GET", "/admin/epoch", None);
                started_after = e["started_after"].as_u64().unwrap_or(0);
                e["epoch"].as_u64() == Some(from + 1)
                    && c.status(m)["committed_height"].as_u64().unwrap_or(0) > started_after
            })
        },
    );
    (scheduled_at.elapsed().as_secs_f64(), started_after)
}

/// Validators 0, 1 and 2 (3 of 4: more than 2/3) raise validator 0's stake to 2 and wait
/// until epoch 2 runs on the three; returns the height epoch 2 started after.
fn raise_stake_of_0(c: &Committee) -> u64 {
    change_epoch(
        c,
        &[0, 1, 2],
        &[0, 1, 2],
        "PUT",
        "/admin/validators/0/stake",
        Some(serde_json::json!({ "stake": 2 })),
    )
    .1
}

#[test]
fn stake_change_and_removal_under_load_keep_committing() {
    let c = start(5);
    let stop = AtomicBool::new(false);
    let gaps = GapWatch::start(c.apis[0].clone());
    let (submitted, stake_change, removal) = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&c, &[0, 1, 2, 3], 600, Duration::from_millis(100), &stop));
        std::thread::sleep(Duration::from_secs(2));

        // A bad request is refused with the value at fault and changes nothing.
        for (id, stake, names) in [(9, 2, "no validator 9"), (4, 0, "stake")] {
            let path = format!("/admin/validators/{id}/stake");
            let body = serde_json::json!({ "stake": stake });
            let (code, answer) = admin(&c, 0, "PUT", &path, Some(body));
            assert_eq!(code, 400, "{answer}");
            assert!(answer.to_string().contains(names), "{answer}");
        }

        // Epoch 1 → 2: validator 4's stake doubles (4 of 5 votes: more than 2/3).
        let stake_change = change_epoch(
            &c,
            &[0, 1, 2, 3],
            &[0, 1, 2, 3, 4],
            "PUT",
            "/admin/validators/4/stake",
            Some(serde_json::json!({ "stake": 2 })),
        );
        let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
        assert_eq!(e["committee"][4]["stake"].as_u64(), Some(2), "{e}");
        assert!(e["scheduled"].as_array().unwrap().is_empty(), "{e}");

        // Epoch 2 → 3: validator 4 is removed. The four others hold 4 of 6: not more than 2/3,
        // so it also takes validator 4's own vote (its operator retires it).
        let removal = change_epoch(
            &c,
            &[0, 1, 2, 3, 4],
            &[0, 1, 2, 3],
            "DELETE",
            "/admin/validators/4",
            None,
        );
        let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
        assert_eq!(e["committee"].as_array().unwrap().len(), 4, "{e}");
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        (loader.join().unwrap(), stake_change, removal)
    });
    let longest_gap = gaps.finish();

    // The four members agree on the state after the removal's epoch started and beyond.
    let height = assert_same_state(&c, &[0, 1, 2, 3]);
    // The removed validator is not a peer any more: the members closed its connections.
    assert_disconnected(&c, 4);
    assert_eq!(
        epoch_of(&c, 4),
        3,
        "the removed validator followed the chain to its removal"
    );
    let changes: f64 = (0..4)
        .map(|i| c.metric(i, "keel_epoch_changes_total").unwrap_or(0.0))
        .sum();
    assert_eq!(changes, 8.0, "each member changed epoch twice");
    println!(
        "submitted {submitted} transfers; stake change: {:.2} s from scheduled to the new epoch's first commit (epoch 2 after height {}); removal: {:.2} s (epoch 3 after height {}); longest commit gap {} ms; roots equal at height {height}",
        stake_change.0,
        stake_change.1,
        removal.0,
        removal.1,
        longest_gap.as_millis()
    );
    assert_gap_within_bound(longest_gap);
}

/// Records the honest proposals it receives.
#[derive(Default)]
struct Recorder {
    proposals: std::sync::Mutex<Vec<SignedBlock>>,
}

impl Handler<ConsensusMessage> for Recorder {
    fn on_notification(&self, _from: PublicKey, message: Notification<ConsensusMessage>) {
        if let Notification::Consensus(ConsensusMessage::Proposal(b)) = message {
            let mut p = self.proposals.lock().unwrap();
            if p.len() < 64 {
                p.push(b);
            }
        }
    }

    fn on_request(&self, _from: PublicKey, _request: Request) -> Response {
        Response::Refused("test peer".into())
    }
}

fn old_epoch_refused(c: &Committee, i: usize) -> f64 {
    c.metric(
        i,
        "keel_consensus_wrong_epoch_messages_total{epoch=\"old\"}",
    )
    .unwrap_or(0.0)
}

/// Validator 3 is a test peer with its real keys that runs no protocol. After the three others
/// moved to epoch 2, it sends them epoch-1 messages that were valid in epoch 1: its own signed
/// votes for epoch-1 blocks, its own proposals built on epoch-1 certificates, and replays of
/// the honest epoch-1 proposals. Every one is refused as old and counted, and the three keep
/// committing.
#[test]
fn old_epoch_votes_and_proposals_after_the_switch_are_refused_and_counted() {
    const PEER: usize = 3;
    let mut c = Committee::create(4);
    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let (committee, chain_id, addresses) = c.genesis_committee();
    let keys = c.path().join(format!("keys-{PEER}"));
    let protocol = read_key(&keys.join("protocol.key"));
    let network = read_key(&keys.join("network.key"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let recorder = Arc::new(Recorder::default());
    let net = Network::<ConsensusMessage>::start(
        EndpointConfig {
            listen: addresses[PEER],
            ..EndpointConfig::default()
        },
        &NetworkIdentity::from_seed(&network.seed()).unwrap(),
        AllowedPeers::new(committee.validators().iter().map(|v| v.network_key)),
        recorder.clone(),
    )
    .unwrap();
    for (v, address) in committee.validators().iter().zip(&addresses).take(3) {
        net.add_peer(v.network_key, *address);
    }
    c.wait_for(
        Duration::from_secs(30),
        "epoch-1 proposals to reach the peer",
        || recorder.proposals.lock().unwrap().len() >= 8,
    );
    let before: Vec<f64> = (0..3).map(|i| old_epoch_refused(&c, i)).collect();
    assert!(
        before.iter().all(|n| *n == 0.0),
        "nothing old yet: {before:?}"
    );

    // The three operators raise validator 0's stake (3 of 4 is more than 2/3).
    raise_stake_of_0(&c);
    let committed_then = c.status(0)["committed_height"].as_u64().unwrap();

    // Epoch-1 messages, each valid in epoch 1.
    let old: Vec<SignedBlock> = recorder
        .proposals
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.block.epoch == committee.epoch())
        .cloned()
        .collect();
    assert!(old.len() >= 8, "{} epoch-1 proposals recorded", old.len());
    let me = ValidatorIndex(PEER as u32);
    let mut messages = Vec::new();
    for b in &old {
        let data = VoteData {
            epoch: b.block.epoch,
            round: b.block.round,
            block: b.digest(),
        };
        messages.push(ConsensusMessage::Vote(Vote::new(
            data, me, &protocol, chain_id,
        )));
        let own = Block {
            author: me,
            round: Round(b.block.round.0 + 1),
            parent_qc: b.block.parent_qc.clone(),
            timeout_cert: None,
            failed_leaders: Vec::new(),
            payload: Vec::new(),
            timestamp: TimestampMs(common::now_ms()),
            epoch: b.block.epoch,
        };
        messages.push(ConsensusMessage::Proposal(own.sign(&protocol, chain_id)));
        messages.push(ConsensusMessage::Proposal(b.clone()));
    }
    let sent = messages.len();
    for m in messages {
        for i in 0..3 {
            net.send(
                &committee.validators()[i].network_key,
                &Notification::Consensus(m.clone()),
            )
            .unwrap();
        }
    }
    // Each honest validator counts (at least) the old messages from the peer's own key; the
    // replays of others' proposals are counted too (the epoch is checked first).
    c.wait_for(
        Duration::from_secs(20),
        "the old messages to be refused",
        || (0..3).all(|i| old_epoch_refused(&c, i) >= (sent as f64) * 0.9),
    );
    c.wait_for(Duration::from_secs(20), "commits to go on", || {
        c.status(0)["committed_height"].as_u64().unwrap() > committed_then + 20
    });
    let counted: Vec<f64> = (0..3).map(|i| old_epoch_refused(&c, i)).collect();
    println!(
        "sent {sent} epoch-1 messages to each of 3 validators in epoch 2; refused as old: {counted:?}"
    );
    assert_same_state(&c, &[0, 1, 2]);
}

/// 4 → 5 → 4 under load: a fifth node starts outside the committee and follows the chain; three
/// of the four operators vote it in; it joins at the next epoch and proposes and votes; then
/// it is removed and the others close its connections.
#[test]
fn a_validator_joins_from_a_follower_and_is_removed_again_under_load() {
    let mut c = start(4);
    let new = c.add_follower();
    c.spawn(new);
    c.wait_for(Duration::from_secs(30), "the follower's API", || {
        c.http
            .get(format!("{}/v1/status", c.apis[new]))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    let c = c;
    assert!(
        c.status(new)["validator"].is_null(),
        "a follower has no committee index"
    );
    let keys = c.path().join(format!("keys-{new}"));
    let protocol = read_key(&keys.join("protocol.key"));
    let network = read_key(&keys.join("network.key"));
    let proof = keel_types::PossessionProof::create(
        &protocol,
        &network,
        keel_types::ChainId(common::CHAIN),
    );
    let add = serde_json::json!({
        "protocol_key": protocol.public().to_string(),
        "network_key": network.public().to_string(),
        "address": c.p2p_address(new),
        "stake": 1,
        "proof_protocol": hex::encode(proof.protocol.0),
        "proof_network": hex::encode(proof.network.0),
    });
    // A proof that does not verify is refused, naming it.
    let mut forged = add.clone();
    forged["proof_network"] = serde_json::json!(hex::encode(proof.protocol.0));
    let (code, answer) = admin(&c, 0, "POST", "/admin/validators", Some(forged));
    assert_eq!(code, 400, "{answer}");
    assert!(answer.to_string().contains("proof"), "{answer}");

    let stop = AtomicBool::new(false);
    let gaps = GapWatch::start(c.apis[0].clone());
    let (join, leave) = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&c, &[0, 1, 2, 3], 900, Duration::from_millis(100), &stop));
        std::thread::sleep(Duration::from_secs(2));
        // 4 → 5: three of four vote it in.
        let join = change_epoch(
            &c,
            &[0, 1, 2],
            &[0, 1, 2, 3, new],
            "POST",
            "/admin/validators",
            Some(add.clone()),
        );
        let (_, e) = admin(&c, new, "GET", "/admin/epoch", None);
        assert_eq!(e["validator"].as_u64(), Some(new as u64), "{e}");
        assert_eq!(c.status(new)["validator"].as_u64(), Some(new as u64));
        // It proposes (a committed block of its own) and votes (its signatures in QCs).
        c.wait_for(
            Duration::from_secs(60),
            "the new validator to propose and vote",
            || {
                let (_, s) = admin(&c, 0, "GET", "/admin/status", None);
                s["consensus"]["reputations"].as_array().is_some_and(|r| {
                    r.iter().any(|v| {
                        v["validator"].as_u64() == Some(new as u64)
                            && v["proposed"].as_u64().unwrap_or(0) > 0
                            && v["voted"].as_u64().unwrap_or(0) > 0
                    })
                })
            },
        );
        // 5 → 4: four of five vote it out.
        let leave = change_epoch(
            &c,
            &[0, 1, 2, 3],
            &[0, 1, 2, 3],
            "DELETE",
            &format!("/admin/validators/{new}"),
            None,
        );
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        loader.join().unwrap();
        (join, leave)
    });
    let longest_gap = gaps.finish();
    let height = assert_same_state(&c, &[0, 1, 2, 3]);
    assert_disconnected(&c, new);
    println!(
        "join: {:.2} s from scheduled to the new epoch's first commit (after height {}); leave: {:.2} s (after height {}); longest commit gap {} ms; roots equal at height {height}",
        join.0,
        join.1,
        leave.0,
        leave.1,
        longest_gap.as_millis()
    );
    assert_gap_within_bound(longest_gap);
}

/// A validator that was stopped while the epoch changed learns of it late: restarted, it
/// range-syncs to the old epoch's end (fetching the epoch-ending checkpoint it never saw
/// certified, which proves the last blocks), switches, syncs on in the new epoch and takes part
/// again, with the same state as the others.
#[test]
fn a_validator_down_across_an_epoch_change_catches_up_and_rejoins() {
    let mut c = start(4);
    let stopped = c.stop(3);
    assert!(stopped.success(), "validator 3 stopped cleanly");
    let started_after = raise_stake_of_0(&c);
    // The new epoch runs on well past its start (a few checkpoints' worth of heights).
    c.wait_for(Duration::from_secs(60), "the new epoch to run on", || {
        c.status(0)["committed_height"].as_u64().unwrap() > started_after + 40
    });
    c.spawn(3);
    c.wait_for(
        Duration::from_secs(90),
        "validator 3 to reach the new epoch",
        || {
            c.http
                .get(format!("{}/v1/status", c.apis[3]))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|s| s["epoch"].as_u64() == Some(2))
        },
    );
    let target = c.status(0)["committed_height"].as_u64().unwrap() + 30;
    c.wait_for(
        Duration::from_secs(90),
        "validator 3 to execute past the others' height",
        || c.executed_height(3) >= target,
    );
    // Validator 0's execution may trail its commits by a block when validator 3 gets there.
    c.wait_for(
        Duration::from_secs(10),
        "validator 0 to execute it too",
        || c.executed_height(0) >= target,
    );
    let height = assert_same_state(&c, &[0, 1, 2, 3]);
    assert!(height >= target, "validator 0 went back below {target}");
    let log = std::fs::read_to_string(c.log_path(3)).unwrap();
    println!(
        "validator 3 restarted after the epoch change (epoch 2 after height {started_after}) and reached height {target}, roots equal at {height}; fetched the epoch-ending checkpoint: {}",
        log.contains("fetched the epoch-ending checkpoint")
    );
}

/// Validator 3 rotates both its keys under load, without a restart: it stages new keys
/// through the admin API (staging again returns the same ones), votes the rotation alone, and
/// from the next epoch signs and connects with the new keys. Afterwards its old network key
/// cannot connect to any member, and a vote signed with its old protocol key is refused, both
/// as a transaction (governance) and as a consensus vote of the new epoch.
#[test]
fn a_validator_rotates_its_keys_under_load_without_a_restart() {
    const R: usize = 3;
    let c = start(4);
    let keys = c.path().join(format!("keys-{R}"));
    let old_protocol = read_key(&keys.join("protocol.key"));
    let old_network = read_key(&keys.join("network.key"));
    let pid = c.pid(R);
    let stop = AtomicBool::new(false);
    let gaps = GapWatch::start(c.apis[0].clone());
    let (submitted, rotation, staged) = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&c, &[0, 1, 2], 600, Duration::from_millis(100), &stop));
        std::thread::sleep(Duration::from_secs(2));
        // Nothing staged yet: the rotation is refused, naming what is missing.
        let (code, answer) = admin(&c, R, "POST", "/admin/keys/rotate", None);
        assert_eq!(code, 400, "{answer}");
        assert!(
            answer.to_string().contains("no keys are staged"),
            "{answer}"
        );
        let (code, staged) = admin(&c, R, "POST", "/admin/keys/stage", None);
        assert_eq!(code, 200, "{staged}");
        assert_eq!(staged["new"], true);
        let (code, again) = admin(&c, R, "POST", "/admin/keys/stage", None);
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["new"], false);
        assert_eq!(again["protocol_key"], staged["protocol_key"]);
        assert_ne!(
            staged["protocol_key"].as_str(),
            Some(old_protocol.public().to_string().as_str())
        );
        // Its own vote is enough: a validator rotates its own keys.
        let rotation = change_epoch(&c, &[R], &[0, 1, 2, 3], "POST", "/admin/keys/rotate", None);
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        (loader.join().unwrap(), rotation, staged)
    });
    let longest_gap = gaps.finish();
    let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
    assert_eq!(
        e["committee"][R]["protocol_key"], staged["protocol_key"],
        "{e}"
    );
    assert_eq!(
        e["committee"][R]["network_key"], staged["network_key"],
        "{e}"
    );
    assert_eq!(c.pid(R), pid, "the rotating validator was not restarted");
    // The key files moved: the config's names hold the new keys, `.prev` the old ones.
    assert_eq!(
        read_key(&keys.join("protocol.key")).public().to_string(),
        staged["protocol_key"].as_str().unwrap()
    );
    assert_eq!(
        read_key(&keys.join("network.key.prev")).public(),
        old_network.public()
    );
    // It proposes in the new epoch (signed with the new protocol key, or peers would not have
    // certified and committed its blocks).
    let epoch = e["epoch"].as_u64().unwrap();
    c.wait_for(
        Duration::from_secs(30),
        "a committed block of the rotated validator",
        || {
            let top = c.status(0)["committed_height"].as_u64().unwrap();
            (rotation.1 + 1..=top).rev().take(200).any(|h| {
                let (_, b) = c.get(0, &format!("/v1/blocks/{h}"));
                b["author"].as_u64() == Some(R as u64) && b["epoch"].as_u64() == Some(epoch)
            })
        },
    );
    let height = assert_same_state(&c, &[0, 1, 2, 3]);

    // The old protocol key: its governance vote for the new epoch fails, naming the sender.
    let (committee, chain_id, addresses) = c.genesis_committee();
    let account = keel_types::Address::from_public_key(&old_protocol.public());
    let (_, a) = c.get(0, &format!("/v1/accounts/{account}"));
    let vote = keel_types::Transaction {
        chain_id,
        sender: old_protocol.public(),
        nonce: keel_types::Nonce(a["nonce"].as_u64().unwrap_or(0)),
        expiry: TimestampMs(common::now_ms() + 60_000),
        ops: vec![keel_types::Op::Governance {
            epoch: keel_types::Epoch(epoch),
            change: keel_types::CommitteeChange::Remove {
                protocol_key: committee.validators()[0].protocol_key,
            },
        }],
    }
    .sign(&old_protocol);
    c.submit_batch(0, std::slice::from_ref(&vote));
    let mut receipt = Value::Null;
    c.wait_for(
        Duration::from_secs(30),
        "the old key's vote to execute",
        || {
            receipt = c.get(0, &format!("/v1/transactions/{}", vote.digest())).1;
            receipt["status"] == "executed"
        },
    );
    assert!(
        receipt.to_string().contains("not a validator"),
        "the old key's vote: {receipt}"
    );
    // A consensus vote of the new epoch signed with the old protocol key does not verify.
    let mut validators = committee.validators().to_vec();
    for (i, v) in e["committee"].as_array().unwrap().iter().enumerate() {
        validators[i].protocol_key = v["protocol_key"].as_str().unwrap().parse().unwrap();
        validators[i].network_key = v["network_key"].as_str().unwrap().parse().unwrap();
    }
    let now = keel_types::Committee::new(keel_types::Epoch(epoch), validators).unwrap();
    let data = VoteData {
        epoch: keel_types::Epoch(epoch),
        round: Round(1),
        block: keel_types::Digest::of_tagged("test", &1u8),
    };
    let forged = Vote::new(data, ValidatorIndex(R as u32), &old_protocol, chain_id);
    assert!(forged.verify(&now, chain_id).is_err());

    // The old network key: no member accepts a connection from it any more (the grace is over).
    std::thread::sleep(Duration::from_millis(GRACE_MS));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let net = Network::<ConsensusMessage>::start(
        EndpointConfig::default(),
        &NetworkIdentity::from_seed(&old_network.seed()).unwrap(),
        AllowedPeers::new(now.validators().iter().map(|v| v.network_key)),
        Arc::new(Recorder::default()),
    )
    .unwrap();
    for (v, address) in now.validators().iter().zip(&addresses).take(3) {
        net.add_peer(v.network_key, *address);
        net.send(
            &v.network_key,
            &Notification::Consensus(ConsensusMessage::Vote(forged.clone())),
        )
        .unwrap();
    }
    // (A TLS 1.3 client sees its handshake done before the server has checked the client's
    // certificate, so a refused dial may look connected for a moment: what counts is that no
    // member ever answers.)
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for v in now.validators().iter().take(3) {
            let answer = rt.block_on(net.request(&v.network_key, &Request::SyncStatus));
            assert!(
                answer.is_err(),
                "a member answered the old network key: {answer:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(net.shutdown());
    println!(
        "submitted {submitted} transfers; key rotation: {:.2} s from scheduled to the new epoch's first commit (epoch {epoch} after height {}); longest commit gap {} ms; roots equal at height {height}",
        rotation.0,
        rotation.1,
        longest_gap.as_millis()
    );
    assert_gap_within_bound(longest_gap);
}

/// A validator that loses its disk after an epoch change, when its peers have pruned every
/// height of the first epoch, comes back by state sync: it proves epoch 2's committee from
/// genesis through the certified checkpoint that ended epoch 1, installs a checkpoint of
/// epoch 2 and runs on in epoch 2 with the others' state.
#[test]
fn a_wiped_validator_state_syncs_across_an_epoch_change() {
    let mut c = Committee::create(4);
    for i in 0..4 {
        c.edit_config(
            i,
            &[
                (
                    "epoch_switch_grace_ms = 10000",
                    &format!("epoch_switch_grace_ms = {GRACE_MS}"),
                ),
                ("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n"),
                ("interval = 1000\n", "interval = 100\n"),
                ("keep_blocks = 100000\n", "keep_blocks = 100\n"),
                ("interval_ms = 1000\n", "interval_ms = 200\n"),
                ("state_snapshots = 2\n", "state_snapshots = 20\n"),
            ],
        );
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    submit_spread(&c, &[0, 1, 2, 3], &transfers(ACCOUNTS, 0, 1));
    c.sigkill(3);
    let started_after = raise_stake_of_0(&c);
    submit_spread(&c, &[0, 1, 2], &transfers(ACCOUNTS, 1, 1));
    // Every height of epoch 1 is pruned on the three others.
    c.wait_for(
        Duration::from_secs(120),
        "the others to prune all of epoch 1",
        || {
            (0..3).all(|i| {
                c.metric(i, "keel_pruned_height").unwrap_or(0.0) > started_after as f64 + 1.0
            })
        },
    );
    std::fs::remove_dir_all(c.path().join("net/v3-data")).unwrap();
    c.edit_config(3, &[("format = \"human\"\n", "format = \"json\"\n")]);
    c.spawn(3);
    c.wait_ready(3, Duration::from_secs(120));
    let status = c.status(3);
    assert_eq!(status["epoch"].as_u64(), Some(2), "{status}");
    assert_eq!(status["validator"].as_u64(), Some(3), "{status}");
    let target = c.status(0)["committed_height"].as_u64().unwrap() + 20;
    c.wait_for(
        Duration::from_secs(60),
        "validator 3 to execute past the others' height",
        || c.executed_height(3) >= target,
    );
    let height = assert_same_state(&c, &[0, 1, 2, 3]);
    let log = std::fs::read_to_string(c.log_path(3)).unwrap();
    let installed: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("state sync installed"))
        })
        .map(|v| format!("height {}", v["fields"]["height"]))
        .collect();
    assert!(
        log.contains("epoch end proven"),
        "validator 3 did not prove the epoch's end: {}",
        c.log_tail(3)
    );
    println!(
        "wiped validator 3 proved epoch 2 (after height {started_after}) from genesis and installed the state at {installed:?}; roots equal at {height}"
    );
}

/// The README's way back for a rotating validator that was down at its own key switch: its
/// members refuse the old network key once the grace period is over, so its operator moves the
/// staged key files over the config's, removes the `.prev` files and restarts it with an empty
/// data directory; it follows the chain with the new keys and votes again in the epoch that
/// names them.
#[test]
fn a_rotating_validator_down_at_its_switch_comes_back_with_its_staged_keys() {
    const R: usize = 3;
    let mut c = Committee::create(4);
    // A long delay between scheduling and the switch, so the validator can be stopped in it.
    let genesis = c.path().join("net/genesis.json");
    let text = std::fs::read_to_string(&genesis).unwrap();
    assert!(
        text.contains("\"change_delay_blocks\": 20"),
        "genesis format changed"
    );
    std::fs::write(
        &genesis,
        text.replace(
            "\"change_delay_blocks\": 20",
            "\"change_delay_blocks\": 400",
        ),
    )
    .unwrap();
    for i in 0..4 {
        c.edit_config(
            i,
            &[
                (
                    "epoch_switch_grace_ms = 10000",
                    &format!("epoch_switch_grace_ms = {GRACE_MS}"),
                ),
                // Blocks without waiting for payload: the 300 heights pass in seconds.
                ("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n"),
            ],
        );
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let (code, staged) = admin(&c, R, "POST", "/admin/keys/stage", None);
    assert_eq!(code, 200, "{staged}");
    let (code, vote) = admin(&c, R, "POST", "/admin/keys/rotate", None);
    assert_eq!(code, 200, "{vote}");
    c.wait_for(
        Duration::from_secs(30),
        "the rotation to be scheduled",
        || {
            let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
            e["scheduled"].as_array().is_some_and(|s| !s.is_empty())
        },
    );
    // Down before the switch; the others switch and the grace period passes.
    c.sigkill(R);
    c.wait_for(Duration::from_secs(120), "epoch 2 on the others", || {
        (0..3).all(|i| epoch_of(&c, i) == 2)
    });
    std::thread::sleep(Duration::from_millis(2 * GRACE_MS));
    // The operator's steps.
    let keys = c.path().join(format!("keys-{R}"));
    for name in ["protocol.key", "network.key"] {
        std::fs::rename(keys.join(format!("{name}.staged")), keys.join(name)).unwrap();
        let _ = std::fs::remove_file(keys.join(format!("{name}.prev")));
    }
    std::fs::remove_dir_all(c.path().join(format!("net/v{R}-data"))).unwrap();
    c.spawn(R);
    c.wait_for(
        Duration::from_secs(120),
        "the validator back in epoch 2",
        || {
            c.http
                .get(format!("{}/v1/status", c.apis[R]))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|s| {
                    s["epoch"].as_u64() == Some(2) && s["validator"].as_u64() == Some(R as u64)
                })
        },
    );
    let target = c.status(0)["committed_height"].as_u64().unwrap() + 20;
    c.wait_for(
        Duration::from_secs(60),
        "it to execute past the others' height",
        || c.executed_height(R) >= target,
    );
    let height = assert_same_state(&c, &[0, 1, 2, 3]);
    let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
    assert_eq!(
        e["committee"][R]["network_key"], staged["network_key"],
        "{e}"
    );
    println!("the rotated validator came back with its staged keys; roots equal at {height}");
}
