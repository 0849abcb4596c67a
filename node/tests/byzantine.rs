//! A committee member that really misbehaves: three `keel run` processes and, as validator 3, a
//! test peer that holds validator 3's real keys and QUIC identity but runs no protocol. For
//! the whole test it floods the honest validators with
//! - replays of honest proposals it has received, above all those of the rounds before its
//!   own (which always fail, so their batches must be proposed again), from itself;
//! - proposals in rounds it does not lead, signed with its real key, with 200 junk proofs;
//! - proposals claiming another author, with a junk signature;
//! - oversized proposals (more proofs than a block may carry).
//!
//! The honest validators must refuse all of it before verifying signatures (their dropped
//! counter rises) and keep ordering clients' transactions: every submitted transfer executes
//! on every honest validator. Before proofs were held back only for the round leader's
//! accepted proposal, replaying a failed proposal kept its batches out of blocks for as long
//! as the replays went on.

mod common;

use common::{CHAIN, Committee, SERIAL, now_ms, read_key};
use keel_consensus::{ConsensusMessage, LeaderElection, WeightedRoundRobin};
use keel_p2p::{
    AllowedPeers, EndpointConfig, Handler, Network, NetworkIdentity, Notification, Request,
    Response,
};
use keel_types::{
    BatchInfo, Block, ChainId, Digest, Epoch, MultiSignature, ProofOfAvailability, PublicKey,
    QuorumCertificate, Round, Signature, SignedBlock, TimestampMs, ValidatorIndex,
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const BYZANTINE: usize = 3;
/// The flood stops by itself after this long even if the test is still waiting.
const FLOOD_FOR: Duration = Duration::from_secs(120);

/// Remembers the honest proposals it receives and the highest round seen.
#[derive(Default)]
struct Listener {
    proposals: Mutex<Vec<SignedBlock>>,
    round: AtomicU64,
}

impl Handler<ConsensusMessage> for Listener {
    fn on_notification(&self, _from: PublicKey, message: Notification<ConsensusMessage>) {
        if let Notification::Consensus(m) = message {
            self.round.fetch_max(m.round().0, Ordering::Relaxed);
            if let ConsensusMessage::Proposal(b) = m {
                let mut p = self.proposals.lock().unwrap();
                // The most recent 256.
                if p.len() >= 256 {
                    p.remove(0);
                }
                p.push(b);
            }
        }
    }

    fn on_request(&self, _from: PublicKey, _request: Request) -> Response {
        Response::Refused("byzantine test peer".into())
    }
}

fn junk_proofs(n: usize, epoch: Epoch) -> Vec<ProofOfAvailability> {
    (0..n)
        .map(|i| ProofOfAvailability {
            info: BatchInfo {
                author: ValidatorIndex(0),
                epoch,
                sequence: i as u64,
                expires_at: TimestampMs(u64::MAX),
                digest: Digest::of_tagged("junk", &(i as u64)),
                num_transactions: 1,
                num_bytes: 1,
            },
            signatures: MultiSignature::from_raw(vec![
                (ValidatorIndex(0), Signature([7; 64])),
                (ValidatorIndex(1), Signature([9; 64])),
            ]),
        })
        .collect()
}

/// `n` transfers, each from its own fresh account at nonce 0.
fn one_shot_transfers(n: u64) -> Vec<keel_types::SignedTransaction> {
    (0..n)
        .map(|i| {
            let key = keel_types::test_utils::seeded_key("byzantine-test-sender", i);
            keel_types::Transaction {
                chain_id: ChainId(CHAIN),
                sender: key.public(),
                nonce: keel_types::Nonce(0),
                expiry: TimestampMs(now_ms() + 600_000),
                ops: vec![keel_types::Op::Transfer {
                    to: keel_types::Address::from_public_key(&common::account_key(0).public()),
                    amount: 1,
                }],
            }
            .sign(&key)
        })
        .collect()
}

/// Validator 3's endpoint (its real network key and address) run by the test, connected to
/// the `honest` validators, delivering what arrives to `handler`. Call inside a runtime.
fn test_peer(
    network: &keel_types::KeyPair,
    committee: &keel_types::Committee,
    addresses: &[std::net::SocketAddr],
    honest: &[usize],
    handler: Arc<dyn Handler<ConsensusMessage>>,
) -> Network<ConsensusMessage> {
    let net = Network::<ConsensusMessage>::start(
        EndpointConfig {
            listen: addresses[BYZANTINE],
            ..EndpointConfig::default()
        },
        &NetworkIdentity::from_seed(&network.seed()).unwrap(),
        AllowedPeers::new(committee.validators().iter().map(|v| v.network_key)),
        handler,
    )
    .unwrap();
    for i in honest {
        net.add_peer(committee.validators()[*i].network_key, addresses[*i]);
    }
    net
}

fn dropped_messages(c: &Committee, i: usize) -> u64 {
    c.metric(i, "keel_consensus_dropped_messages_total")
        .unwrap_or(0.0) as u64
}

#[test]
fn a_flooding_replaying_member_cannot_stall_the_others() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // No fees: the clients' transfers come from unfunded one-shot accounts.
    let mut c = Committee::create_with(4, &["--fee-per-op", "0", "--fee-per-byte", "0"]);
    let honest = [0, 1, 2];
    // Leaders wait 200 ms after their parent, so batches reach every leader's proposal, the
    // doomed ones included; leaders rotate round robin.
    for i in honest {
        let path = c.path().join(format!("net/v{i}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        // (No idle wait on top: the pacing must stay within half the round timeout.)
        let paced = text
            .replace(
                "min_block_interval_ms = 10\n",
                "min_block_interval_ms = 200\n",
            )
            .replace("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n")
            // The interval must stay within half the shortest round timeout.
            .replace("min_timeout_ms = 200\n", "min_timeout_ms = 500\n")
            // The flooder plans around the leader schedule: round robin, known in advance.
            .replace("kind = \"reputation\"\n", "kind = \"round_robin\"\n");
        assert!(
            paced.contains("min_block_interval_ms = 200\n")
                && paced.contains("max_idle_wait_ms = 0\n")
                && paced.contains("min_timeout_ms = 500\n")
                && paced.contains("kind = \"round_robin\"\n"),
            "the generated config sets the pacing and election fields"
        );
        std::fs::write(&path, paced).unwrap();
    }
    for i in honest {
        c.spawn(i);
    }
    for i in honest {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let (committee, chain_id, addresses) = c.genesis_committee();
    let keys = c.path().join(format!("keys-{BYZANTINE}"));
    let protocol = read_key(&keys.join("protocol.key"));
    let network = read_key(&keys.join("network.key"));
    let me = ValidatorIndex(BYZANTINE as u32);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let listener = Arc::new(Listener::default());
    let net = test_peer(&network, &committee, &addresses, &honest, listener.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, listener, net) = (stop.clone(), sent.clone(), listener.clone(), net);
        let committee = committee.clone();
        std::thread::spawn(move || {
            let leaders = WeightedRoundRobin::new(&committee);
            let epoch = committee.epoch();
            let junk = junk_proofs(200, epoch);
            let oversized = junk_proofs(keel_types::consensus::MAX_BLOCK_PAYLOAD, epoch);
            let started = Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_FOR {
                k += 1;
                let current = listener.round.load(Ordering::Relaxed);
                let mut out: Vec<ConsensusMessage> = Vec::new();
                // Replays of honest proposals: the newest two, and every recent one whose
                // round precedes a round this peer leads. Those always fail (it never forms
                // their QC), so their batches must be proposed again: a replay that held them
                // back would keep them out of blocks for good.
                let replays: Vec<SignedBlock> = {
                    let p = listener.proposals.lock().unwrap();
                    let doomed = p
                        .iter()
                        .rev()
                        .filter(|b| leaders.leader(Round(b.block.round.0 + 1)) == me);
                    p.iter()
                        .rev()
                        .take(2)
                        .chain(doomed.take(32))
                        .cloned()
                        .collect()
                };
                out.extend(replays.into_iter().map(ConsensusMessage::Proposal));
                // Rounds around the current one that validator 3 does not lead.
                for round in [current, current + 1, current + 2] {
                    let round = Round(round.max(1));
                    let block = |author, payload: &[ProofOfAvailability]| Block {
                        epoch,
                        round,
                        author,
                        parent_qc: QuorumCertificate::genesis(epoch, chain_id),
                        timeout_cert: None,
                        failed_leaders: vec![],
                        payload: payload.to_vec(),
                        timestamp: TimestampMs(k),
                    };
                    if leaders.leader(round) != me {
                        out.push(ConsensusMessage::Proposal(
                            block(me, &junk).sign(&protocol, chain_id),
                        ));
                    }
                    out.push(ConsensusMessage::Proposal(SignedBlock {
                        block: block(leaders.leader(round), &junk),
                        signature: Signature([3; 64]),
                    }));
                    if k.is_multiple_of(8) {
                        out.push(ConsensusMessage::Proposal(
                            block(me, &oversized).sign(&protocol, chain_id),
                        ));
                    }
                }
                for m in out {
                    let _ = net.broadcast(&Notification::Consensus(m));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Clients keep submitting while the flood goes on; every transfer must execute everywhere.
    let before: Vec<u64> = honest.iter().map(|i| dropped_messages(&c, *i)).collect();
    // 32 rounds of 64 transactions a quarter second apart: clients keep coming for eight
    // seconds, so the proposals of every leader carry batches. Each transaction has its own
    // sender (nonce 0, unfunded: it executes as a failed transfer), so no transaction depends
    // on the order in which batches are ordered, only on their being ordered at all.
    let txs = one_shot_transfers(32 * 64);
    let mut accepted = 0;
    for (k, wave) in txs.chunks(64).enumerate() {
        let answer = c.submit_batch(honest[k % honest.len()], wave);
        let n = answer["accepted"].as_u64().unwrap() as usize;
        assert_eq!(n, wave.len(), "wave {k} refused: {answer}");
        accepted += n;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(accepted, txs.len(), "every transaction admitted");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !honest
        .iter()
        .all(|i| c.executed_transactions(*i) >= txs.len() as u64)
    {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            let report: Vec<String> = honest
                .iter()
                .map(|i| format!("validator {i}: {}\n{}", c.status(*i), c.log_tail(*i)))
                .collect();
            panic!(
                "not every transfer executed on every honest validator within 90 s of flooding:\n{}",
                report.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_flooding = !flood.is_finished();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert!(
        still_flooding,
        "the flood ended before the transfers executed"
    );
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 1_000, "the test peer sent only {sent} messages");
    assert!(
        !listener.proposals.lock().unwrap().is_empty(),
        "the test peer received no proposal to replay"
    );
    for (k, i) in honest.iter().enumerate() {
        let dropped = dropped_messages(&c, *i) - before[k];
        assert!(
            dropped > sent / 4,
            "validator {i} dropped only {dropped} of {sent} hostile messages"
        );
    }
}

/// Counts the distinct batches each honest validator acknowledges to the flooder (a
/// designated verifier acknowledges both copies of a batch).
#[derive(Default)]
struct AckCounter {
    acks: Mutex<std::collections::HashMap<ValidatorIndex, u64>>,
    seen: Mutex<std::collections::HashSet<(ValidatorIndex, keel_types::Digest)>>,
}

impl Handler<ConsensusMessage> for AckCounter {
    fn on_notification(&self, _from: PublicKey, message: Notification<ConsensusMessage>) {
        if let Notification::BatchAck(ack) = message
            && self
                .seen
                .lock()
                .unwrap()
                .insert((ack.signer, ack.info.digest))
        {
            *self.acks.lock().unwrap().entry(ack.signer).or_default() += 1;
        }
    }

    fn on_request(&self, _from: PublicKey, _request: Request) -> Response {
        Response::Refused("byzantine test peer".into())
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Submits `txs` spread over `honest` and returns how long until every honest validator
/// executed `total` transactions.
fn execute_wave(
    c: &Committee,
    honest: &[usize],
    txs: &[keel_types::SignedTransaction],
    total: u64,
) -> Duration {
    let started = Instant::now();
    assert_eq!(common::submit_spread(c, honest, txs), txs.len());
    c.wait_for(
        Duration::from_secs(90),
        "the wave to execute everywhere",
        || honest.iter().all(|i| c.executed_transactions(*i) >= total),
    );
    started.elapsed()
}

#[test]
fn a_member_flooding_batches_is_held_to_its_quota_and_the_others_keep_committing() {
    const QUOTA: u64 = 48;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // No fees: the clients' transfers come from unfunded one-shot accounts.
    let mut c = Committee::create_with(4, &["--fee-per-op", "0", "--fee-per-byte", "0"]);
    let honest = [0, 1, 2];
    for i in honest {
        c.edit_config(
            i,
            &[
                (
                    "max_stored_batches_per_author = 4096\n",
                    &format!("max_stored_batches_per_author = {QUOTA}\n"),
                ),
                (
                    "max_stored_bytes_per_author = 268435456\n",
                    "max_stored_bytes_per_author = 8388608\n",
                ),
            ],
        );
        c.spawn(i);
    }
    for i in honest {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let (committee, chain_id, addresses) = c.genesis_committee();
    let keys = c.path().join(format!("keys-{BYZANTINE}"));
    let network = read_key(&keys.join("network.key"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let acks = Arc::new(AckCounter::default());
    let net = test_peer(&network, &committee, &addresses, &honest, acks.clone());

    // Without the attacker: a warm-up wave, then a wave of transfers, timed.
    let per_wave = 600;
    let txs = one_shot_transfers(4 * per_wave);
    let wave = |k: u64| &txs[(k * per_wave) as usize..((k + 1) * per_wave) as usize];
    execute_wave(&c, &honest, wave(0), per_wave);
    let quiet = execute_wave(&c, &honest, wave(1), 2 * per_wave);
    let disk = |i: usize| {
        c.metric(i, "keel_storage_disk_bytes{column=\"batches\"}")
            .unwrap_or(0.0) as u64
    };
    let quiet_disk: Vec<u64> = honest.iter().map(|i| disk(*i)).collect();
    let quiet_rss: Vec<u64> = honest.iter().map(|i| rss_kib(c.pid(*i))).collect();

    // The flood: batches of 64 signed 1 KiB puts (valid signatures, so only the quota stops
    // them), each a new digest. The first ones expire in 3 s, the rest in 100 s.
    let sender = keel_types::test_utils::seeded_key("batch-flooder", 0);
    let tx = keel_types::Transaction {
        chain_id,
        sender: sender.public(),
        nonce: keel_types::Nonce(0),
        expiry: TimestampMs(now_ms() + 600_000),
        ops: vec![keel_types::Op::Put {
            key: b"flood".to_vec(),
            value: vec![7; 1024],
        }],
    }
    .sign(&sender);
    let flood = |from: u64, count: u64, lifetime_ms: u64| {
        for sequence in from..from + count {
            let batch = keel_types::Batch {
                author: ValidatorIndex(BYZANTINE as u32),
                epoch: committee.epoch(),
                sequence,
                expires_at: TimestampMs(now_ms() + lifetime_ms),
                transactions: vec![tx.clone(); 64],
            };
            // Twice: a validator not designated to verify a batch holds its first copy
            // unverified and verifies (and acknowledges) the second, so every batch held is
            // acknowledged, and each refused one is refused twice.
            let _ = net.broadcast(&Notification::Batch(batch.clone()));
            let _ = net.broadcast(&Notification::Batch(batch));
            if sequence % 20 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let acked = |i: usize| {
        acks.acks
            .lock()
            .unwrap()
            .get(&ValidatorIndex(i as u32))
            .copied()
            .unwrap_or(0)
    };
    let over_quota = |i: usize| c.metric(i, "keel_batches_over_quota_total").unwrap_or(0.0) as u64;
    // Refused over quota, or dropped before (a full verification queue).
    let turned_away =
        |i: usize| over_quota(i) + c.metric(i, "keel_batches_refused_total").unwrap_or(0.0) as u64;
    flood(0, 400, 3_000);
    c.wait_for(
        Duration::from_secs(30),
        "the quota to refuse batches",
        || honest.iter().all(|i| turned_away(*i) >= 2 * (400 - QUOTA)),
    );
    let first: Vec<u64> = honest.iter().map(|i| acked(*i)).collect();
    println!("400 short-lived batches: acknowledged {first:?} (quota {QUOTA})");
    for (k, n) in first.iter().enumerate() {
        assert!(*n <= QUOTA, "validator {k} acknowledged {n} > {QUOTA}");
        assert!(*n >= QUOTA / 2, "validator {k} acknowledged only {n}");
    }
    // Once the committed chain passes their expiry they are deleted and the quota is free.
    c.wait_for(
        Duration::from_secs(30),
        "expired batches to be deleted",
        || {
            honest.iter().all(|i| {
                c.metric(*i, "keel_batches_expired_total").unwrap_or(0.0) as u64 >= first[*i]
            })
        },
    );
    // A long-lived flood, while clients keep submitting.
    let flooder = std::thread::scope(|s| {
        let handle = s.spawn(|| flood(1_000, 2_000, 100_000));
        let busy = execute_wave(&c, &honest, wave(2), 3 * per_wave);
        handle.join().unwrap();
        busy
    });
    // Copies are also dropped on the way (the flooder's own bounded queues, a full
    // verification queue), so wait until the refusals stop growing, then check that most of
    // the flood was turned away.
    let mut last = Vec::new();
    c.wait_for(
        Duration::from_secs(60),
        "the second flood to be processed",
        || {
            let now: Vec<u64> = honest.iter().map(|i| turned_away(*i)).collect();
            let settled = now == last;
            last = now;
            std::thread::sleep(Duration::from_secs(1));
            settled
        },
    );
    for n in &last {
        assert!(*n >= 2_400 - 2 * QUOTA, "only {n} batches turned away");
    }
    let after_flood = execute_wave(&c, &honest, wave(3), 4 * per_wave);
    let total: Vec<u64> = honest.iter().map(|i| acked(*i)).collect();
    let flood_disk: Vec<u64> = honest.iter().map(|i| disk(*i)).collect();
    let flood_rss: Vec<u64> = honest.iter().map(|i| rss_kib(c.pid(*i))).collect();
    println!(
        "2,400 flooded batches (~66 KiB each, 158 MiB): acknowledged {total:?}; refused over \
         quota {:?}\nhonest waves of {per_wave}: {} ms quiet, {} ms under the flood, {} ms \
         after\nbatches column bytes quiet {quiet_disk:?}, flooded {flood_disk:?}; RSS KiB quiet \
         {quiet_rss:?}, flooded {flood_rss:?}",
        honest.iter().map(|i| over_quota(*i)).collect::<Vec<_>>(),
        quiet.as_millis(),
        flooder.as_millis(),
        after_flood.as_millis(),
    );
    for (k, n) in total.iter().enumerate() {
        // At most the quota of short-lived batches, then at most the quota of long-lived ones.
        assert!(*n <= 2 * QUOTA, "validator {k} acknowledged {n} batches");
    }
}
