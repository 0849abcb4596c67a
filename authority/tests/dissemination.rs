//! Dissemination among four validators over an in-memory network that carries out the actions
//! as the node does, in order (`StoreBatch` into the validator's store; batches, acks and proofs
//! into inboxes; proofs into each validator's own `ProofQueue`, peers' ones after
//! `proof.verify`): batches become proofs that every validator queues and accepts; bad batches
//! get no acknowledgement; only the designated verifier checks a batch's first copy, the
//! others store it unverified and verify a second copy, which the author sends when the proof
//! is late (so every proof is a validity certificate); proofs are re-offered after a failed proposal and dropped once
//! committed or expired; a refused proposal marks nothing proposed; missing batches are
//! fetched and checked against their digest.

use keel_authority::{
    BatchConfig, BatchFetcher, BatchRejection, BatchVerifier, BlockToExecute, Dissemination,
    DisseminationAction, DisseminationConfig, DisseminationDeps, Executor, ExecutorConfig,
    ProofQueue, accept_peer_batch, accept_peer_batch_with_info, designated_verifiers,
    resolve_batches, store_batch,
    test_utils::{BLOCK_TIME, CHAIN, Workload, WorkloadConfig},
};
use keel_storage::{Column, Store, StoreConfig};
use keel_types::{
    Batch, BatchAck, Committee, Digest, Height, ProofOfAvailability, TimestampMs, ValidatorIndex,
    test_utils::committee,
};
use std::{collections::VecDeque, sync::Arc};

enum Msg {
    Batch(Batch),
    Ack(BatchAck),
    Proof(ProofOfAvailability),
}

/// One validator as the node runs it: the dissemination state machine, the verifier its
/// blocking pool uses for peers' batches, its consensus driver's proof queue, and its store.
struct Validator {
    dissemination: Dissemination,
    verifier: BatchVerifier,
    queue: ProofQueue,
    store: Arc<Store>,
}

struct Net {
    nodes: Vec<Validator>,
    /// Batches each validator checked the signatures of.
    verified: Vec<usize>,
    inboxes: Vec<VecDeque<(ValidatorIndex, Msg)>>,
    committee: Committee,
    _dirs: Vec<tempfile::TempDir>,
}

/// Answers fetches from the validators' stores, or lies with `liar`.
struct LocalFetcher {
    stores: Vec<Arc<Store>>,
    /// Answers fetches with this batch instead of the one asked for.
    liar: Option<Batch>,
}

impl BatchFetcher for LocalFetcher {
    fn fetch_batch(&self, digest: &Digest, holders: &[ValidatorIndex]) -> Result<Batch, String> {
        if let Some(lie) = &self.liar {
            return Ok(lie.clone());
        }
        for h in holders {
            if let Some(store) = self.stores.get(h.0 as usize)
                && let Some(bytes) = store.get(Column::Batches, &digest.0).unwrap()
            {
                return Ok(bcs::from_bytes(&bytes).unwrap());
            }
        }
        Err("no holder answered".into())
    }
}

const NOW: TimestampMs = TimestampMs(1_000);

fn config() -> DisseminationConfig {
    DisseminationConfig {
        reoffer_after_ms: 500,
        expire_after_ms: 10_000,
        ..DisseminationConfig::default()
    }
}

fn batch_config() -> BatchConfig {
    BatchConfig {
        max_transactions: 10,
        max_bytes: 1 << 20,
        seal_after_ms: 50,
        ..BatchConfig::default()
    }
}

fn net() -> Net {
    let (committee, keys) = committee(4);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = keys
        .into_iter()
        .zip(&dirs)
        .enumerate()
        .map(|(i, (key, dir))| {
            let me = ValidatorIndex(i as u32);
            let key = Arc::new(key);
            Validator {
                dissemination: Dissemination::new(DisseminationDeps {
                    config: config(),
                    batch: batch_config(),
                    chain_id: CHAIN,
                    committee: committee.clone(),
                    me,
                    key: key.clone(),
                    first_sequence: 0,
                }),
                verifier: BatchVerifier::new(committee.clone(), CHAIN, me, key),
                queue: ProofQueue::from_config(&config(), 4),
                store: Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap()),
            }
        })
        .collect();
    Net {
        nodes,
        verified: vec![0; 4],
        inboxes: (0..4).map(|_| VecDeque::new()).collect(),
        committee,
        _dirs: dirs,
    }
}

impl Net {
    fn send_to_others(&mut self, from: usize, msg: impl Fn() -> Msg) {
        for (i, inbox) in self.inboxes.iter_mut().enumerate() {
            if i != from {
                inbox.push_back((ValidatorIndex(from as u32), msg()));
            }
        }
    }

    /// Carries out validator `v`'s actions in order, as the node does.
    fn carry_out(&mut self, v: usize, actions: impl IntoIterator<Item = DisseminationAction>) {
        for action in actions {
            match action {
                // The node writes the reservation; nothing here restarts.
                DisseminationAction::ReserveSequences { .. } => {}
                DisseminationAction::StoreBatch(batch) => {
                    store_batch(&self.nodes[v].store, &batch).unwrap();
                }
                DisseminationAction::BroadcastBatch(batch) => {
                    self.send_to_others(v, || Msg::Batch((*batch).clone()));
                }
                DisseminationAction::SendBatch { batch, to } => {
                    for peer in to {
                        self.inboxes[peer.0 as usize]
                            .push_back((ValidatorIndex(v as u32), Msg::Batch((*batch).clone())));
                    }
                }
                DisseminationAction::SendAck { to, ack } => {
                    self.inboxes[to.0 as usize]
                        .push_back((ValidatorIndex(v as u32), Msg::Ack(ack)));
                }
                DisseminationAction::ProofReady(proof) => {
                    self.nodes[v].queue.insert(proof.clone(), NOW);
                    self.send_to_others(v, || Msg::Proof(proof.clone()));
                }
            }
        }
    }

    /// Hands client transactions to validator `v`; returns how many batches they sealed.
    fn submit(&mut self, v: usize, txs: Vec<keel_types::SignedTransaction>) -> usize {
        let actions = self.nodes[v].dissemination.on_transactions(txs, NOW);
        let sealed = actions
            .iter()
            .filter(|a| matches!(a, DisseminationAction::StoreBatch(_)))
            .count();
        self.carry_out(v, actions);
        sealed
    }

    /// Validator `v`'s periodic tick: the dissemination timer, then the queue's expiry.
    fn tick(&mut self, v: usize, now: TimestampMs) {
        let actions = self.nodes[v].dissemination.tick(now);
        self.carry_out(v, actions);
        self.nodes[v].queue.expire(now);
    }

    /// A peer's proof reaching validator `v`: verified, then queued. False if either refused.
    fn on_proof(&mut self, v: usize, proof: ProofOfAvailability) -> bool {
        proof.verify(&self.committee, CHAIN).is_ok() && self.nodes[v].queue.insert(proof, NOW)
    }

    /// Whether validator `v` votes for a proposal carrying `proofs`.
    fn validate(&mut self, v: usize, proofs: &[ProofOfAvailability]) -> bool {
        self.nodes[v]
            .queue
            .validate(proofs, &self.committee, CHAIN, NOW, NOW)
    }

    /// Fetches from every validator's store.
    fn fetcher(&self) -> LocalFetcher {
        LocalFetcher {
            stores: self.nodes.iter().map(|n| n.store.clone()).collect(),
            liar: None,
        }
    }

    /// Delivers messages until none is left (batches to `skip` are lost); returns the
    /// refusals seen.
    fn pump(&mut self, skip: Option<usize>) -> Vec<BatchRejection> {
        let mut refusals = Vec::new();
        loop {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                while let Some((from, msg)) = self.inboxes[i].pop_front() {
                    idle = false;
                    if Some(i) == skip && matches!(msg, Msg::Batch(_)) {
                        continue;
                    }
                    match msg {
                        Msg::Batch(b) => {
                            // As the node does: a first copy is verified only by a designated
                            // verifier, a copy of a batch already held by whoever holds it.
                            let info = b.info();
                            let node = &self.nodes[i];
                            let held = node
                                .store
                                .get(Column::Batches, &info.digest.0)
                                .unwrap()
                                .is_some();
                            let verify = held || node.verifier.is_designated(&info);
                            if verify {
                                self.verified[i] += 1;
                            }
                            match accept_peer_batch_with_info(
                                &node.verifier,
                                from,
                                b,
                                info,
                                NOW,
                                verify,
                            ) {
                                Ok(actions) => self.carry_out(i, actions),
                                Err(r) => refusals.push(r),
                            }
                        }
                        Msg::Ack(a) => {
                            let actions = self.nodes[i].dissemination.on_ack(&a, NOW);
                            self.carry_out(i, actions);
                        }
                        Msg::Proof(p) => {
                            self.on_proof(i, p);
                        }
                    }
                }
            }
            if idle {
                return refusals;
            }
        }
    }
}

fn transactions(n: usize) -> Vec<keel_types::SignedTransaction> {
    Workload::new(3, WorkloadConfig::transfers(50)).block(n)
}

#[test]
fn a_full_batch_becomes_a_proof_every_validator_queues_and_accepts() {
    let mut net = net();
    assert_eq!(net.submit(0, transactions(10)), 1);
    assert!(net.pump(None).is_empty());
    for v in 0..4 {
        let proofs = net.nodes[v].queue.pull(10, u64::MAX, NOW);
        assert_eq!(
            proofs.len(),
            1,
            "validator {v}: {:?}",
            net.nodes[v].dissemination
        );
        assert!(net.validate(v, &proofs));
    }
    // Every validator stored the batch: resolution needs no fetch (this fetcher has no peer).
    let proof = net.nodes[3]
        .queue
        .pull(1, u64::MAX, TimestampMs(NOW.0 + 1_000))
        .remove(0);
    let no_peers = LocalFetcher {
        stores: Vec::new(),
        liar: None,
    };
    let batches = resolve_batches(&net.nodes[3].store, &no_peers, &[proof]);
    assert_eq!(batches.unwrap()[0].transactions.len(), 10);
}

#[test]
fn a_partial_batch_is_sealed_by_its_timer() {
    let mut net = net();
    assert_eq!(net.submit(1, transactions(3)), 0);
    assert!(net.nodes[1].dissemination.has_open_batch());
    net.tick(1, TimestampMs(NOW.0 + 10));
    assert!(
        net.nodes[1].dissemination.has_open_batch(),
        "sealed before its timer"
    );
    net.tick(1, TimestampMs(NOW.0 + 60));
    assert!(!net.nodes[1].dissemination.has_open_batch());
    net.pump(None);
    assert_eq!(net.nodes[2].queue.pull(10, u64::MAX, NOW).len(), 1);
}

fn forged_batch() -> Batch {
    let mut txs = transactions(5);
    txs[3].signature.0[0] ^= 1;
    Batch {
        author: ValidatorIndex(0),
        epoch: keel_types::Epoch(1),
        sequence: 0,
        expires_at: TimestampMs(NOW.0 + 60_000),
        transactions: txs,
    }
}

#[test]
fn a_forged_signature_or_wrong_sender_gets_no_acknowledgement() {
    let mut net = net();
    let forged = forged_batch();
    for peer in 1..4 {
        let refusal = accept_peer_batch(
            &net.nodes[peer].verifier,
            ValidatorIndex(0),
            forged.clone(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(refusal, BatchRejection::BadSignature { index: 3 });
    }
    let honest = Batch {
        transactions: transactions(5),
        ..forged
    };
    let refusal =
        accept_peer_batch(&net.nodes[2].verifier, ValidatorIndex(1), honest, NOW).unwrap_err();
    assert!(
        matches!(refusal, BatchRejection::NotAuthor { .. }),
        "{refusal}"
    );
    assert!(net.pump(None).is_empty());
    assert!(net.nodes[0].queue.pull(10, u64::MAX, NOW).is_empty());
}

#[test]
fn accept_peer_batch_answers_store_then_ack_and_nothing_for_a_forged_signature() {
    let mut net = net();
    let forged = forged_batch();
    let digest = forged.digest();
    // (Called directly, every verifier refuses it: see the test above.)
    // Delivered over the network: its designated verifier refuses it and stores nothing.
    let designated = designated_verifiers(&net.committee, ValidatorIndex(0), 0);
    for peer in 1..4 {
        net.inboxes[peer].push_back((ValidatorIndex(0), Msg::Batch(forged.clone())));
    }
    assert_eq!(
        net.pump(None),
        vec![BatchRejection::BadSignature { index: 3 }]
    );
    for (i, node) in net.nodes.iter().enumerate().skip(1) {
        let stored = node
            .store
            .get(Column::Batches, &digest.0)
            .unwrap()
            .is_some();
        let is_designated = designated.contains(&ValidatorIndex(i as u32));
        assert_eq!(stored, !is_designated, "the others hold it unverified");
    }
    // A second copy is verified by its holders, who refuse it too.
    for peer in 1..4 {
        net.inboxes[peer].push_back((ValidatorIndex(0), Msg::Batch(forged.clone())));
    }
    assert_eq!(
        net.pump(None),
        vec![BatchRejection::BadSignature { index: 3 }; 3]
    );
    assert_eq!(net.nodes[0].dissemination.collecting(), 0);

    // An honest batch: store it, then acknowledge it to its author, in that order.
    let honest = Batch {
        transactions: transactions(5),
        ..forged
    };
    let [first, second]: [DisseminationAction; 2] = accept_peer_batch(
        &net.nodes[2].verifier,
        ValidatorIndex(0),
        honest.clone(),
        NOW,
    )
    .unwrap()
    .try_into()
    .unwrap();
    assert_eq!(
        first,
        DisseminationAction::StoreBatch(Arc::new(honest.clone()))
    );
    let (to, ack) = match second {
        DisseminationAction::SendAck { to, ack } => (to, ack),
        other => panic!("second action is {other:?}"),
    };
    assert_eq!(to, ValidatorIndex(0));
    assert_eq!(ack.info, honest.info());
    assert_eq!(ack.signer, ValidatorIndex(2));
    assert_eq!(ack.verify(&net.committee, CHAIN), Ok(()));
}

#[test]
fn forged_or_repeated_proofs_are_not_voted_for() {
    let mut net = net();
    net.submit(0, transactions(10));
    net.pump(None);
    let proof = net.nodes[1].queue.pull(1, u64::MAX, NOW).remove(0);
    assert!(net.validate(2, std::slice::from_ref(&proof)));
    assert!(!net.validate(2, &[proof.clone(), proof.clone()]));
    let mut forged = proof.clone();
    forged.signatures.signatures_mut()[0].1.0[5] ^= 1;
    assert!(!net.validate(2, &[forged.clone()]));
    assert!(!net.on_proof(2, forged));
    let mut short = proof;
    short.signatures.signatures_mut().truncate(1);
    assert!(!net.validate(2, &[short]));
}

#[test]
fn a_payload_marks_its_proofs_proposed_only_when_it_is_accepted() {
    let mut net = net();
    net.submit(0, transactions(20));
    net.pump(None);
    let good = net.nodes[1].queue.pull(10, u64::MAX, NOW);
    assert_eq!(good.len(), 2);
    let mut forged = good[1].clone();
    forged.signatures.signatures_mut()[0].1.0[5] ^= 1;

    // Refused proposals (a forged proof; a repeated one) leave validator 2's queue as it was.
    assert!(!net.validate(2, &[good[0].clone(), forged]));
    assert!(!net.validate(2, &[good[0].clone(), good[0].clone()]));
    assert_eq!(
        net.nodes[2].queue.pull(10, u64::MAX, NOW).len(),
        2,
        "a refused payload held back good proofs"
    );

    // An accepted proposal holds its proofs back until they are re-offered.
    assert!(net.validate(3, &good));
    assert!(net.nodes[3].queue.pull(10, u64::MAX, NOW).is_empty());
    assert!(
        net.nodes[3]
            .queue
            .pull(10, u64::MAX, TimestampMs(NOW.0 + 499))
            .is_empty()
    );
    assert_eq!(
        net.nodes[3]
            .queue
            .pull(10, u64::MAX, TimestampMs(NOW.0 + 500))
            .len(),
        2
    );
}

#[test]
fn proofs_are_reoffered_after_a_failed_proposal_and_dropped_when_committed_or_expired() {
    let mut net = net();
    net.submit(0, transactions(20));
    net.pump(None);
    let queue = &mut net.nodes[2].queue;
    assert!(queue.has_available(NOW));
    let first = queue.pull(1, u64::MAX, NOW);
    assert_eq!(first.len(), 1);
    // Oldest first; the one just offered is held back.
    let second = queue.pull(10, u64::MAX, NOW);
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].info.digest, second[0].info.digest);
    assert!(!queue.has_available(TimestampMs(NOW.0 + 499)));
    assert!(
        queue
            .pull(10, u64::MAX, TimestampMs(NOW.0 + 499))
            .is_empty()
    );
    assert!(queue.has_available(TimestampMs(NOW.0 + 500)));
    // No commit within the re-offer delay: both are offered again.
    assert_eq!(queue.pull(10, u64::MAX, TimestampMs(NOW.0 + 500)).len(), 2);
    queue.remove_committed([(first[0].info.digest, first[0].info.expires_at)]);
    assert_eq!(
        queue.pull(10, u64::MAX, TimestampMs(NOW.0 + 1_500)).len(),
        1
    );
    // A late copy of a committed proof is not queued again.
    assert!(!net.on_proof(2, first[0].clone()));
    net.tick(2, TimestampMs(NOW.0 + 10_000));
    assert!(net.nodes[2].queue.is_empty(), "expired proof still queued");
}

#[test]
fn the_proof_queue_is_bounded() {
    let mut net = net();
    net.submit(0, transactions(30));
    net.pump(None);
    let proofs = net.nodes[1].queue.pull(10, u64::MAX, NOW);
    assert_eq!(proofs.len(), 3);
    let mut queue = ProofQueue::new(2, 1, 100, 1_000);
    let inserted: Vec<bool> = proofs.into_iter().map(|p| queue.insert(p, NOW)).collect();
    assert_eq!(inserted, vec![true, true, false]);
    assert_eq!(queue.len(), 2);
}

#[test]
fn a_missing_batch_is_fetched_and_a_wrong_answer_refused() {
    let mut net = net();
    net.submit(0, transactions(10));
    // Validator 3 misses the batch.
    net.pump(Some(3));
    let proof = net.nodes[1].queue.pull(1, u64::MAX, NOW).remove(0);
    let fetcher = net.fetcher();
    let fetched =
        resolve_batches(&net.nodes[3].store, &fetcher, std::slice::from_ref(&proof)).unwrap();
    assert_eq!(fetched[0].digest(), proof.info.digest);
    // Now stored locally.
    assert!(
        net.nodes[3]
            .store
            .get(Column::Batches, &proof.info.digest.0)
            .unwrap()
            .is_some()
    );

    let liar = LocalFetcher {
        liar: Some(Batch {
            author: ValidatorIndex(0),
            epoch: keel_types::Epoch(1),
            sequence: 9,
            expires_at: TimestampMs(NOW.0 + 60_000),
            transactions: transactions(2),
        }),
        ..net.fetcher()
    };
    let other_proof = {
        net.submit(0, transactions(10));
        net.pump(Some(3));
        net.nodes[1].queue.pull(1, u64::MAX, NOW).remove(0)
    };
    let err = resolve_batches(&net.nodes[3].store, &liar, &[other_proof]).unwrap_err();
    assert!(err.to_string().contains("another batch"), "{err}");
}

#[test]
fn every_validator_executes_the_same_ordered_proofs_to_the_same_state() {
    let mut net = net();
    let mut workload = Workload::new(5, WorkloadConfig::transfers(200));
    let genesis = workload.genesis();
    let mut executors: Vec<Executor> = net
        .nodes
        .iter()
        .map(|n| {
            Executor::open(n.store.clone(), ExecutorConfig::with_workers(2), &genesis).unwrap()
        })
        .collect();
    let fetcher = net.fetcher();
    for height in 1..=5u64 {
        // Clients submit to different validators; validator 3 misses the others' batches in
        // odd blocks and must fetch them.
        for v in 0..4 {
            net.submit(v, workload.block(10));
        }
        let skip = (height % 2 == 1).then_some(3);
        net.pump(skip);
        // Batches designated to validator 3 wait for the fallback: a second copy to the
        // others, who verify it.
        for v in 0..4 {
            net.tick(v, TimestampMs(NOW.0 + config().verify_fallback_ms));
        }
        net.pump(skip);
        let leader = (height % 4) as usize;
        let payload = net.nodes[leader].queue.pull(100, u64::MAX, NOW);
        assert_eq!(
            payload.len(),
            4,
            "leader {leader} sees every validator's proof"
        );
        let mut roots = Vec::new();
        for (v, executor) in executors.iter_mut().enumerate() {
            assert!(net.validate(v, &payload));
            let batches = resolve_batches(&net.nodes[v].store, &fetcher, &payload).unwrap();
            let block = BlockToExecute {
                epoch: executor
                    .epoch_state()
                    .map(|e| e.epoch())
                    .unwrap_or_default(),
                height: Height(height),
                digest: Digest::of_tagged("block", &height),
                timestamp: BLOCK_TIME,
                transactions: batches.iter().flat_map(|b| &b.transactions).collect(),
            };
            let outcome = executor.execute_block(&block).unwrap();
            assert_eq!(outcome.receipts.len(), 40);
            net.nodes[v]
                .queue
                .remove_committed(payload.iter().map(|p| (p.info.digest, p.info.expires_at)));
            // A proposal ordering a committed batch again gets no vote (these proofs verify:
            // only the commit refuses them).
            assert!(
                !net.validate(v, &payload),
                "voted to re-order committed batches"
            );
            roots.push((
                bcs::to_bytes(&outcome.receipts).unwrap(),
                executor.store().state_root().unwrap(),
            ));
        }
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "validators diverged at {height}"
        );
    }
    for node in &mut net.nodes {
        assert!(
            node.queue
                .pull(100, u64::MAX, TimestampMs(NOW.0 + 5_000))
                .is_empty()
        );
    }
}

/// Validity certificates: only the author and the designated verifier check a batch's
/// signatures, the proof still forms, and every validator ends up holding the batch.
#[test]
fn only_the_designated_verifier_checks_a_batch_and_the_proof_still_forms() {
    let mut net = net();
    assert_eq!(net.submit(0, transactions(10)), 1);
    assert!(net.pump(None).is_empty());
    let designated = designated_verifiers(&net.committee, ValidatorIndex(0), 0);
    assert_eq!(designated.len(), 1, "f = 1 of 4");
    for v in 1..4 {
        let expected = usize::from(designated.contains(&ValidatorIndex(v as u32)));
        assert_eq!(net.verified[v], expected, "validator {v} verified");
        assert_eq!(net.nodes[v].queue.pull(10, u64::MAX, NOW).len(), 1);
    }
    let digest = net.nodes[0]
        .queue
        .pull(10, u64::MAX, NOW)
        .first()
        .map(|p| p.info.digest)
        .expect("the author's proof");
    for node in &net.nodes {
        assert!(
            node.store
                .get(Column::Batches, &digest.0)
                .unwrap()
                .is_some()
        );
    }
}

/// A designated verifier that stays silent: the author offers the batch again after the
/// fallback to those that have not acknowledged it, they verify the second copy, and the proof
/// forms; the silent validator is then suspected, so the next batch designated to it is
/// offered twice at once.
#[test]
fn a_silent_designated_verifier_costs_one_fallback_then_is_bypassed_at_once() {
    let mut net = net();
    let silent = designated_verifiers(&net.committee, ValidatorIndex(0), 0)[0];
    assert_eq!(net.submit(0, transactions(10)), 1);
    net.pump(Some(silent.0 as usize));
    assert_eq!(net.nodes[0].dissemination.collecting(), 1, "no proof yet");
    let fallback = config().verify_fallback_ms;
    net.tick(0, TimestampMs(NOW.0 + fallback - 1));
    net.pump(Some(silent.0 as usize));
    assert_eq!(
        net.nodes[0].dissemination.collecting(),
        1,
        "not before the fallback"
    );
    net.tick(0, TimestampMs(NOW.0 + fallback));
    assert!(net.pump(Some(silent.0 as usize)).is_empty());
    assert_eq!(net.nodes[0].dissemination.collecting(), 0, "proof formed");
    assert_eq!(net.nodes[0].dissemination.suspected(), 1);

    // The next batch designated to the silent one: a second copy leaves with the first.
    let mut sealed = 0;
    while sealed < 3 {
        sealed += net.submit(0, transactions(10));
        net.pump(Some(silent.0 as usize));
    }
    assert_eq!(
        net.nodes[0].dissemination.collecting(),
        0,
        "every proof formed without waiting for the fallback"
    );
}

/// The safety side of validity certificates: a Byzantine author's batch with one forged
/// signature never gets a proof, neither from the first copies (the others store it
/// unverified and stay silent) nor from the second (its holders verify and refuse it). A
/// receiver that acknowledged an unverified batch would let it be certified, and this test
/// would fail.
#[test]
fn a_batch_with_a_forged_signature_is_never_certified() {
    let mut net = net();
    let mut txs = transactions(10);
    txs[7].signature.0[0] ^= 1;
    // The author's machine takes what admission passed; a Byzantine author skips admission.
    assert_eq!(net.submit(0, txs), 1);
    let first = net.pump(None);
    assert_eq!(first, vec![BatchRejection::BadSignature { index: 7 }]);
    net.tick(0, TimestampMs(NOW.0 + config().verify_fallback_ms));
    // The second copy goes to every validator that has not acknowledged it (the designated
    // one refuses again): all three verify and refuse.
    let second = net.pump(None);
    assert_eq!(second, vec![BatchRejection::BadSignature { index: 7 }; 3]);
    assert_eq!(net.nodes[0].dissemination.collecting(), 1, "no proof");
    for v in 0..4 {
        assert!(net.nodes[v].queue.pull(10, u64::MAX, NOW).is_empty());
    }
}
