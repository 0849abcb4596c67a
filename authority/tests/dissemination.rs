//! Dissemination among four validators over an in-memory network: batches become proofs that
//! every validator queues and accepts; bad batches get no acknowledgement; proofs are re-offered
//! after a failed proposal and dropped once committed or expired; missing batches are fetched
//! and checked against their digest.

use keel_authority::{
    BatchConfig, BatchNetwork, BatchRejection, BlockToExecute, Dissemination, DisseminationConfig,
    DisseminationDeps, Executor, ExecutorConfig, ProofQueue, resolve_batches,
    test_utils::{BLOCK_TIME, CHAIN, Workload, WorkloadConfig},
};
use keel_storage::{Store, StoreConfig};
use keel_types::{
    Batch, BatchAck, Digest, Height, ProofOfAvailability, TimestampMs, ValidatorIndex,
    test_utils::committee,
};
use parking_lot::Mutex;
use std::{collections::VecDeque, sync::Arc};

enum Msg {
    Batch(Batch),
    Ack(BatchAck),
    Proof(ProofOfAvailability),
}

type Inboxes = Arc<Vec<Mutex<VecDeque<(ValidatorIndex, Msg)>>>>;

struct LocalNet {
    me: ValidatorIndex,
    inboxes: Inboxes,
    stores: Arc<Mutex<Vec<Arc<Store>>>>,
    /// Answers fetches with this batch instead of the one asked for.
    liar: Option<Batch>,
}

impl LocalNet {
    fn to_others(&self, msg: impl Fn() -> Msg) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i as u32 != self.me.0 {
                inbox.lock().push_back((self.me, msg()));
            }
        }
    }
}

impl BatchNetwork for LocalNet {
    fn broadcast_batch(&self, batch: &Batch) {
        self.to_others(|| Msg::Batch(batch.clone()));
    }
    fn send_ack(&self, to: ValidatorIndex, ack: &BatchAck) {
        self.inboxes[to.0 as usize]
            .lock()
            .push_back((self.me, Msg::Ack(ack.clone())));
    }
    fn broadcast_proof(&self, proof: &ProofOfAvailability) {
        self.to_others(|| Msg::Proof(proof.clone()));
    }
    fn fetch_batch(&self, digest: &Digest, holders: &[ValidatorIndex]) -> Result<Batch, String> {
        if let Some(lie) = &self.liar {
            return Ok(lie.clone());
        }
        let stores = self.stores.lock();
        for h in holders {
            if let Some(bytes) = stores[h.0 as usize]
                .get(keel_storage::Column::Batches, &digest.0)
                .unwrap()
            {
                return Ok(bcs::from_bytes(&bytes).unwrap());
            }
        }
        Err("no holder answered".into())
    }
}

struct Net {
    nodes: Vec<Dissemination<LocalNet>>,
    inboxes: Inboxes,
    stores: Vec<Arc<Store>>,
    _dirs: Vec<tempfile::TempDir>,
}

const NOW: TimestampMs = TimestampMs(1_000);

fn config() -> DisseminationConfig {
    DisseminationConfig {
        batch: BatchConfig {
            max_transactions: 10,
            ..BatchConfig::default()
        },
        reoffer_after_ms: 500,
        expire_after_ms: 10_000,
        ..DisseminationConfig::new(CHAIN)
    }
}

fn net() -> Net {
    let (committee, keys) = committee(4);
    let inboxes: Inboxes = Arc::new((0..4).map(|_| Mutex::new(VecDeque::new())).collect());
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Vec<Arc<Store>> = dirs
        .iter()
        .map(|d| Arc::new(Store::open(d.path(), &StoreConfig::default()).unwrap()))
        .collect();
    let shared = Arc::new(Mutex::new(stores.clone()));
    let nodes = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            Dissemination::new(DisseminationDeps {
                config: config(),
                committee: committee.clone(),
                me: ValidatorIndex(i as u32),
                key,
                store: stores[i].clone(),
                network: LocalNet {
                    me: ValidatorIndex(i as u32),
                    inboxes: inboxes.clone(),
                    stores: shared.clone(),
                    liar: None,
                },
            })
        })
        .collect();
    Net {
        nodes,
        inboxes,
        stores,
        _dirs: dirs,
    }
}

impl Net {
    /// Delivers messages until none is left (batches to `skip` are lost); returns the
    /// refusals seen.
    fn pump(&mut self, skip: Option<usize>) -> Vec<BatchRejection> {
        let mut refusals = Vec::new();
        loop {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                while let Some((from, msg)) = self.inboxes[i].lock().pop_front() {
                    idle = false;
                    if Some(i) == skip && matches!(msg, Msg::Batch(_)) {
                        continue;
                    }
                    let node = &mut self.nodes[i];
                    match msg {
                        Msg::Batch(b) => {
                            if let Err(r) = node.on_batch(from, b).unwrap() {
                                refusals.push(r);
                            }
                        }
                        Msg::Ack(a) => {
                            node.on_ack(&a, NOW).unwrap();
                        }
                        Msg::Proof(p) => {
                            node.on_proof(p, NOW);
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
    let published = net.nodes[0].on_transactions(transactions(10), NOW).unwrap();
    assert_eq!(published, 1);
    assert!(net.pump(None).is_empty());
    for node in &mut net.nodes {
        let proofs = node.pull(10, NOW);
        assert_eq!(proofs.len(), 1, "{node:?}");
        assert!(node.validate_payload(&proofs));
    }
    // Every validator stored the batch: resolution needs no fetch.
    let proof = net.nodes[3]
        .queue()
        .pull(1, TimestampMs(NOW.0 + 1_000))
        .remove(0);
    let batches = resolve_batches(&net.stores[3], net.nodes[3].network(), &[proof]);
    assert_eq!(batches.unwrap()[0].transactions.len(), 10);
}

#[test]
fn a_partial_batch_is_sealed_by_its_timer() {
    let mut net = net();
    assert_eq!(
        net.nodes[1].on_transactions(transactions(3), NOW).unwrap(),
        0
    );
    assert!(net.nodes[1].has_open_batch());
    net.nodes[1].tick(TimestampMs(NOW.0 + 10)).unwrap();
    assert!(net.nodes[1].has_open_batch(), "sealed before its timer");
    net.nodes[1].tick(TimestampMs(NOW.0 + 60)).unwrap();
    assert!(!net.nodes[1].has_open_batch());
    net.pump(None);
    assert_eq!(net.nodes[2].pull(10, NOW).len(), 1);
}

#[test]
fn a_forged_signature_or_wrong_sender_gets_no_acknowledgement() {
    let mut net = net();
    let mut txs = transactions(5);
    txs[3].signature.0[0] ^= 1;
    let forged = Batch {
        author: ValidatorIndex(0),
        epoch: keel_types::Epoch(1),
        sequence: 0,
        transactions: txs,
    };
    for peer in 1..4 {
        let refusal = net.nodes[peer]
            .on_batch(ValidatorIndex(0), forged.clone())
            .unwrap()
            .unwrap_err();
        assert_eq!(refusal, BatchRejection::BadSignature { index: 3 });
    }
    let honest = Batch {
        transactions: transactions(5),
        ..forged
    };
    let refusal = net.nodes[2]
        .on_batch(ValidatorIndex(1), honest)
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(refusal, BatchRejection::NotAuthor { .. }),
        "{refusal}"
    );
    assert!(net.pump(None).is_empty());
    assert!(net.nodes[0].pull(10, NOW).is_empty());
}

#[test]
fn forged_or_repeated_proofs_are_not_voted_for() {
    let mut net = net();
    net.nodes[0].on_transactions(transactions(10), NOW).unwrap();
    net.pump(None);
    let proof = net.nodes[1].pull(1, NOW).remove(0);
    assert!(net.nodes[2].validate_payload(std::slice::from_ref(&proof)));
    assert!(!net.nodes[2].validate_payload(&[proof.clone(), proof.clone()]));
    let mut forged = proof.clone();
    forged.signatures.signatures_mut()[0].1.0[5] ^= 1;
    assert!(!net.nodes[2].validate_payload(&[forged.clone()]));
    assert!(!net.nodes[2].on_proof(forged, NOW));
    let mut short = proof;
    short.signatures.signatures_mut().truncate(1);
    assert!(!net.nodes[2].validate_payload(&[short]));
}

#[test]
fn proofs_are_reoffered_after_a_failed_proposal_and_dropped_when_committed_or_expired() {
    let mut net = net();
    net.nodes[0].on_transactions(transactions(20), NOW).unwrap();
    net.pump(None);
    let node = &mut net.nodes[2];
    let first = node.pull(1, NOW);
    assert_eq!(first.len(), 1);
    // Oldest first; the one just offered is held back.
    let second = node.pull(10, NOW);
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].info.digest, second[0].info.digest);
    assert!(node.pull(10, TimestampMs(NOW.0 + 499)).is_empty());
    // No commit within the re-offer delay: both are offered again.
    assert_eq!(node.pull(10, TimestampMs(NOW.0 + 500)).len(), 2);
    node.queue().remove_committed([first[0].info.digest]);
    assert_eq!(node.pull(10, TimestampMs(NOW.0 + 1_500)).len(), 1);
    // A late copy of a committed proof is not queued again.
    assert!(!node.on_proof(first[0].clone(), NOW));
    node.tick(TimestampMs(NOW.0 + 10_000)).unwrap();
    assert!(node.queue().is_empty(), "expired proof still queued");
}

#[test]
fn the_proof_queue_is_bounded() {
    let mut net = net();
    net.nodes[0].on_transactions(transactions(30), NOW).unwrap();
    net.pump(None);
    let proofs = net.nodes[1].pull(10, NOW);
    assert_eq!(proofs.len(), 3);
    let mut queue = ProofQueue::new(2, 100, 1_000);
    let inserted: Vec<bool> = proofs.into_iter().map(|p| queue.insert(p, NOW)).collect();
    assert_eq!(inserted, vec![true, true, false]);
    assert_eq!(queue.len(), 2);
}

#[test]
fn a_missing_batch_is_fetched_and_a_wrong_answer_refused() {
    let mut net = net();
    net.nodes[0].on_transactions(transactions(10), NOW).unwrap();
    // Validator 3 misses the batch.
    net.pump(Some(3));
    let proof = net.nodes[1].pull(1, NOW).remove(0);
    let network = net.nodes[3].network();
    let fetched = resolve_batches(&net.stores[3], network, std::slice::from_ref(&proof)).unwrap();
    assert_eq!(fetched[0].digest(), proof.info.digest);
    // Now stored locally.
    assert!(
        net.stores[3]
            .get(keel_storage::Column::Batches, &proof.info.digest.0)
            .unwrap()
            .is_some()
    );

    let liar = LocalNet {
        me: network.me,
        inboxes: network.inboxes.clone(),
        stores: network.stores.clone(),
        liar: Some(Batch {
            author: ValidatorIndex(0),
            epoch: keel_types::Epoch(1),
            sequence: 9,
            transactions: transactions(2),
        }),
    };
    let other_proof = {
        net.nodes[0].on_transactions(transactions(10), NOW).unwrap();
        net.pump(Some(3));
        net.nodes[1].pull(1, NOW).remove(0)
    };
    let err = resolve_batches(&net.stores[3], &liar, &[other_proof]).unwrap_err();
    assert!(err.to_string().contains("another batch"), "{err}");
}

#[test]
fn every_validator_executes_the_same_ordered_proofs_to_the_same_state() {
    let mut net = net();
    let mut workload = Workload::new(5, WorkloadConfig::transfers(200));
    let genesis = workload.genesis();
    let mut executors: Vec<Executor> = net
        .stores
        .iter()
        .map(|s| Executor::open(s.clone(), ExecutorConfig::with_workers(2), &genesis).unwrap())
        .collect();
    for height in 1..=5u64 {
        // Clients submit to different validators; validator 3 misses the others' batches in
        // odd blocks and must fetch them.
        for v in 0..4 {
            net.nodes[v]
                .on_transactions(workload.block(10), NOW)
                .unwrap();
        }
        net.pump((height % 2 == 1).then_some(3));
        let leader = (height % 4) as usize;
        let payload = net.nodes[leader].pull(100, NOW);
        assert_eq!(
            payload.len(),
            4,
            "leader {leader} sees every validator's proof"
        );
        let mut roots = Vec::new();
        for (v, executor) in executors.iter_mut().enumerate() {
            assert!(net.nodes[v].validate_payload(&payload));
            let batches =
                resolve_batches(&net.stores[v], net.nodes[v].network(), &payload).unwrap();
            let block = BlockToExecute {
                height: Height(height),
                digest: Digest::of_tagged("block", &height),
                timestamp: BLOCK_TIME,
                transactions: batches.iter().flat_map(|b| &b.transactions).collect(),
            };
            let outcome = executor.execute_block(&block).unwrap();
            assert_eq!(outcome.receipts.len(), 40);
            net.nodes[v]
                .queue()
                .remove_committed(payload.iter().map(|p| p.info.digest));
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
        assert!(node.pull(100, TimestampMs(NOW.0 + 5_000)).is_empty());
    }
}
