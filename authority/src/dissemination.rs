//! Batch dissemination (Narwhal / Quorum-Store style): batches travel to every validator before
//! consensus orders their proofs, so a leader proposes digests, not transactions.
//!
//! ```text
//!  author: seal ─StoreBatch─▶ BroadcastBatch ──▶ receiver: accept_peer_batch_with_info
//!          (designated verifier, or a copy already held: validate, verify every signature
//!          once ─StoreBatch─▶ SendAck ──▶ author; others: validate ─StoreBatch─▶ silence)
//!  author: acks from > 1/3 stake ─▶ ProofReady ─▶ node: own ProofQueue + broadcast to peers
//!  author: no proof after verify_fallback_ms ─▶ SendBatch to the non-signers (they verify)
//!
//! Only the author (at admission) and the designated verifiers of a batch
//! ([`crate::designated_verifiers`], in [`crate::batching`]) check its signatures when all goes well. A designated
//! verifier that lets a batch go late is suspected: a batch designated to it goes out twice at
//! once, except a probe after every `2^strikes` of them (strikes: its late batches this
//! epoch), which clears the suspicion if acknowledged before the fallback. A crashed
//! validator then costs one fallback wait per probe, ever rarer, and a Byzantine one that
//! answers probes and stalls the rest costs less each time it is caught. A batch is offered
//! again at most twice (a validator that missed the first copy holds the second unverified
//! and verifies the third), and the fallback grows with the time proofs take, so an
//! overloaded committee does not send every batch twice.
//! ```
//!
//! [`Dissemination`] is this validator's side as a pure state machine: it owns the batch maker,
//! the proof builder and the signing key, does no I/O and reads no clock (time arrives as
//! `now`). Each input returns [`DisseminationAction`]s that the node carries out **in order**:
//! a `StoreBatch` completes before any later action of the same list, so neither the batch nor
//! a proof carrying this validator's own acknowledgement leaves before the batch is stored.
//! What becomes of proofs afterwards is the [`crate::ProofQueue`]'s job, owned by the node's
//! consensus driver. Everything is bounded: the batches awaiting acknowledgements
//! (`max_collecting`) and the size of every batch sealed.

use crate::{
    batching::{AckError, BatchMaker, ProofBuilder, designated_verifiers},
    config::{BatchConfig, DisseminationConfig},
};
use keel_types::{
    Batch, BatchAck, ChainId, Committee, KeyPair, ProofOfAvailability, SignedTransaction,
    TimestampMs, ValidatorIndex,
};
use std::{collections::HashMap, sync::Arc};

/// A suspected validator is probed (sent a batch designated to it alone, once) after
/// `2^strikes` of the batches designated to it, capped at this power of two.
const MAX_PROBE_SHIFT: u32 = 10;
/// The fallback follows the time proofs take: at least this many times its moving average.
const FALLBACK_OVER_PROOF_TIME: f64 = 4.0;
/// ... and at most this many times the configured fallback.
const MAX_FALLBACK_FACTOR: u64 = 20;

/// A designated verifier that let a batch go late and has not acknowledged one in time since.
#[derive(Debug, Default)]
struct Suspect {
    /// Batches designated to it since its last probe.
    since_probe: u64,
}

/// Most batch sizes kept for [`Dissemination::drain_sealed_sizes`] between two drains.
const MAX_SEALED_SIZES: usize = 1024;

/// What the node does for dissemination, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisseminationAction {
    /// Persist, synced, that this validator's batch sequences of `epoch` below `up_to` may be
    /// in use (a restart in the epoch starts at `up_to`); comes before the batch that needs it.
    ReserveSequences {
        /// The epoch.
        epoch: keel_types::Epoch,
        /// The first sequence not reserved.
        up_to: u64,
    },
    /// Persist this batch; later actions may depend on it being stored.
    StoreBatch(Arc<Batch>),
    /// Send this node's batch to every other validator.
    BroadcastBatch(Arc<Batch>),
    /// Offer this node's batch again to the validators listed (those that have not
    /// acknowledged it): a copy of a batch already held is verified and acknowledged by its
    /// holder (see [`crate::peer_batch`]).
    SendBatch {
        /// The batch.
        batch: Arc<Batch>,
        /// Who gets it.
        to: Vec<ValidatorIndex>,
    },
    /// Acknowledge a peer's batch to its author.
    SendAck {
        /// The batch's author.
        to: ValidatorIndex,
        /// This validator's signed acknowledgement.
        ack: BatchAck,
    },
    /// A proof of availability formed for one of this node's batches: the node queues it for
    /// consensus and broadcasts it.
    ProofReady(ProofOfAvailability),
}

/// Who this validator is in dissemination.
#[derive(Debug)]
pub struct DisseminationDeps {
    /// Acknowledgement collection limits.
    pub config: DisseminationConfig,
    /// When batches are sealed.
    pub batch: BatchConfig,
    /// The network.
    pub chain_id: ChainId,
    /// The current committee.
    pub committee: Committee,
    /// This validator's index in it.
    pub me: ValidatorIndex,
    /// Its protocol key (signs its own acknowledgements).
    pub key: Arc<KeyPair>,
    /// The first batch sequence to use: what the node reserved in this epoch before a restart
    /// (see [`crate::batching::BatchMaker`]), 0 otherwise.
    pub first_sequence: u64,
}

/// One validator's side of batch dissemination: seals its batches and turns acknowledgements
/// into proofs.
pub struct Dissemination {
    chain_id: ChainId,
    me: ValidatorIndex,
    key: Arc<KeyPair>,
    maker: BatchMaker,
    builder: ProofBuilder,
    /// Sizes of batches sealed since the last [`Dissemination::drain_sealed_sizes`].
    sealed: Vec<usize>,
    /// Offer a batch again at least this long after sealing if it has no proof yet (more
    /// when proofs take longer: see [`Dissemination::fallback_ms`]).
    fallback_ms: u64,
    /// Moving average of the time from sealing to proof, in ms.
    proof_ms: Option<f64>,
    /// Designated verifiers that let a batch go late and have not acknowledged a batch in
    /// time since: a batch designated to one is sent twice at once, except a probe now and
    /// then, which clears the suspicion if acknowledged in time.
    suspects: HashMap<ValidatorIndex, Suspect>,
    /// Batches each validator let go late in this epoch: the probes of a repeat offender are
    /// rarer (one in `2^strikes`), so a Byzantine verifier that acknowledges probes and
    /// stalls the rest costs less each time.
    strikes: HashMap<ValidatorIndex, u32>,
    /// Batches offered again (for metrics) since the last [`Dissemination::drain_reoffered`].
    reoffered: u64,
}

impl std::fmt::Debug for Dissemination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dissemination")
            .field("me", &self.me)
            .field("open_batch", &self.maker.has_open())
            .field("collecting", &self.builder.collecting())
            .finish()
    }
}

impl Dissemination {
    /// Dissemination for `deps.me` in `deps.committee`'s epoch.
    pub fn new(deps: DisseminationDeps) -> Self {
        let DisseminationDeps {
            config,
            batch,
            chain_id,
            committee,
            me,
            key,
            first_sequence,
        } = deps;
        Dissemination {
            maker: BatchMaker::new(batch, me, committee.epoch(), first_sequence),
            builder: ProofBuilder::new(
                committee,
                chain_id,
                config.max_collecting,
                config.expire_after_ms,
            ),
            chain_id,
            me,
            key,
            sealed: Vec::new(),
            fallback_ms: config.verify_fallback_ms.max(1),
            proof_ms: None,
            suspects: HashMap::new(),
            strikes: HashMap::new(),
            reoffered: 0,
        }
    }

    /// The epoch its batches are for.
    pub fn epoch(&self) -> keel_types::Epoch {
        self.builder.committee().epoch()
    }

    /// Adds admitted transactions to the open batch; the actions publish every batch they
    /// fill.
    pub fn on_transactions(
        &mut self,
        txs: Vec<SignedTransaction>,
        now: TimestampMs,
    ) -> Vec<DisseminationAction> {
        let mut actions = Vec::new();
        for tx in txs {
            if let Some(batch) = self.maker.push(tx, now) {
                self.publish(batch, now, &mut actions);
            }
        }
        actions
    }

    /// Seals a batch whose timer ran out, offers late batches again (suspecting their silent
    /// designated verifiers), and forgets own batches whose acknowledgements did not arrive in
    /// time. Call periodically.
    pub fn tick(&mut self, now: TimestampMs) -> Vec<DisseminationAction> {
        let mut actions = Vec::new();
        if let Some(batch) = self.maker.tick(now) {
            self.publish(batch, now, &mut actions);
        }
        for (digest, reoffers) in self.builder.late(now, self.fallback_ms()) {
            if let Some((batch, to)) = self.builder.reoffer(&digest, now) {
                if reoffers == 0 {
                    let designated =
                        designated_verifiers(self.builder.committee(), self.me, batch.sequence);
                    for v in designated.into_iter().filter(|v| to.contains(v)) {
                        *self.strikes.entry(v).or_default() += 1;
                        self.suspects.insert(v, Suspect::default());
                    }
                }
                self.offer_again(batch, to, &mut actions);
            }
        }
        self.builder.expire(now);
        actions
    }

    /// Counts an acknowledgement of one of this node's batches; the action carries the proof
    /// it completes, if any. Late, duplicate or bogus acknowledgements change nothing.
    ///
    /// Acknowledgements do not depend on time (expiry happens in [`Dissemination::tick`]);
    /// `now` keeps every input's signature alike.
    pub fn on_ack(&mut self, ack: &BatchAck, now: TimestampMs) -> Vec<DisseminationAction> {
        let offers = self.builder.offers(&ack.info.digest);
        let added = self.builder.add(ack);
        // In time: before the batch was offered again (a probe, or a batch designated to an
        // unsuspected verifier).
        if added.is_ok() && offers.is_some_and(|(_, reoffers)| reoffers == 0) {
            self.suspects.remove(&ack.signer);
        }
        if let (Ok(Some(_)), Some((sealed_at, _))) = (&added, offers) {
            let took = now.0.saturating_sub(sealed_at.0) as f64;
            self.proof_ms = Some(match self.proof_ms {
                Some(average) => average + (took - average) / 8.0,
                None => took,
            });
        }
        match added {
            Ok(Some(proof)) => vec![DisseminationAction::ProofReady(proof)],
            Ok(None)
            | Err(AckError::UnknownBatch(_) | AckError::Duplicate(_) | AckError::Invalid(_)) => {
                Vec::new()
            }
        }
    }

    /// Paces sealing by how far behind the pipeline is (see [`BatchMaker::pace`]); returns
    /// the sealing time now in force, in ms.
    pub fn pace(&mut self, pipeline_wait_ms: u64) -> u64 {
        self.maker.pace(pipeline_wait_ms)
    }

    /// Own batches offered again since the last call, for metrics.
    pub fn drain_reoffered(&mut self) -> u64 {
        std::mem::take(&mut self.reoffered)
    }

    /// Validators suspected of not verifying the batches designated to them.
    pub fn suspected(&self) -> usize {
        self.suspects.len()
    }

    /// How long an own batch waits for its proof before it is offered again: the configured
    /// `verify_fallback_ms`, or [`FALLBACK_OVER_PROOF_TIME`] times the average time proofs
    /// take when that is longer (an overloaded committee does not send every batch twice),
    /// at most [`MAX_FALLBACK_FACTOR`] times the configured value.
    pub fn fallback_ms(&self) -> u64 {
        let adaptive = self.proof_ms.unwrap_or(0.0) * FALLBACK_OVER_PROOF_TIME;
        let cap = self.fallback_ms.saturating_mul(MAX_FALLBACK_FACTOR);
        (adaptive as u64).clamp(self.fallback_ms, cap.max(self.fallback_ms))
    }

    /// Whether a batch designated to `designated` goes out twice at once: some designated
    /// verifier is suspected and this batch is not its probe.
    fn send_twice(&mut self, designated: &[ValidatorIndex]) -> bool {
        let mut twice = false;
        for v in designated {
            let strikes = self.strikes.get(v).copied().unwrap_or(0);
            if let Some(suspect) = self.suspects.get_mut(v) {
                suspect.since_probe += 1;
                if suspect.since_probe >= 1u64 << strikes.min(MAX_PROBE_SHIFT) {
                    suspect.since_probe = 0; // the probe: sent once, to see if it answers
                } else {
                    twice = true;
                }
            }
        }
        twice
    }

    /// Whether the batch maker holds transactions not yet sealed.
    pub fn has_open_batch(&self) -> bool {
        self.maker.has_open()
    }

    /// Own batches awaiting acknowledgements.
    pub fn collecting(&self) -> usize {
        self.builder.collecting()
    }

    /// Sizes (transactions) of the batches sealed since the last call, for metrics.
    pub fn drain_sealed_sizes(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.sealed)
    }

    /// Publishes a sealed batch: store it, then broadcast it and count this node's own
    /// acknowledgement (which may complete the proof at once in a small committee).
    fn publish(&mut self, batch: Batch, now: TimestampMs, actions: &mut Vec<DisseminationAction>) {
        if self.sealed.len() < MAX_SEALED_SIZES {
            self.sealed.push(batch.transactions.len());
        }
        if let Some(up_to) = self.maker.reserve() {
            actions.push(DisseminationAction::ReserveSequences {
                epoch: batch.epoch,
                up_to,
            });
        }
        let batch = Arc::new(batch);
        actions.push(DisseminationAction::StoreBatch(batch.clone()));
        // One hash of the whole batch serves the builder and the own acknowledgement.
        let info = batch.info();
        if !self.builder.track_with_info(&batch, info.clone(), now) {
            // Too many batches await acknowledgements: the batch is stored (a peer may still
            // fetch it) but not offered; its transactions are lost to this node.
            return;
        }
        let own = BatchAck::new(info, self.me, &self.key, self.chain_id);
        actions.push(DisseminationAction::BroadcastBatch(batch.clone()));
        let digest = own.info.digest;
        actions.extend(self.on_ack(&own, now));
        // A designated verifier suspected of being down would hold the proof back until the
        // fallback: the others get a second copy at once, which they verify.
        let designated = designated_verifiers(self.builder.committee(), self.me, batch.sequence);
        if self.send_twice(&designated)
            && let Some((batch, to)) = self.builder.reoffer(&digest, now)
        {
            self.offer_again(batch, to, actions);
        }
    }

    fn offer_again(
        &mut self,
        batch: Arc<Batch>,
        to: Vec<ValidatorIndex>,
        actions: &mut Vec<DisseminationAction>,
    ) {
        let to: Vec<ValidatorIndex> = to.into_iter().filter(|v| *v != self.me).collect();
        if to.is_empty() {
            return;
        }
        self.reoffered += 1;
        actions.push(DisseminationAction::SendBatch { batch, to });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{CHAIN, Workload, WorkloadConfig};
    use keel_types::test_utils::committee;
    use keel_types::{Batch, BatchAck};

    fn dissemination(validators: usize, config: DisseminationConfig) -> Dissemination {
        let (committee, mut keys) = committee(validators);
        Dissemination::new(DisseminationDeps {
            config,
            batch: BatchConfig {
                max_transactions: 4,
                ..BatchConfig::default()
            },
            chain_id: CHAIN,
            committee,
            me: ValidatorIndex(0),
            key: Arc::new(keys.remove(0)),
            first_sequence: 0,
        })
    }

    fn kinds(actions: &[DisseminationAction]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                DisseminationAction::ReserveSequences { .. } => "reserve",
                DisseminationAction::StoreBatch(_) => "store",
                DisseminationAction::BroadcastBatch(_) => "broadcast",
                DisseminationAction::SendBatch { .. } => "send",
                DisseminationAction::SendAck { .. } => "ack",
                DisseminationAction::ProofReady(_) => "proof",
            })
            .collect()
    }

    #[test]
    fn an_own_batch_is_stored_before_it_is_broadcast_or_proven() {
        let txs = Workload::new(1, WorkloadConfig::transfers(10)).block(4);
        let mut four = dissemination(4, DisseminationConfig::default());
        let actions = four.on_transactions(txs.clone(), TimestampMs(0));
        // The first batch also reserves sequence numbers, durably, before it leaves.
        assert_eq!(kinds(&actions), ["reserve", "store", "broadcast"]);
        if let [
            _,
            DisseminationAction::StoreBatch(stored),
            DisseminationAction::BroadcastBatch(sent),
        ] = actions.as_slice()
        {
            assert_eq!(stored, sent, "the batch broadcast is the one stored");
        }
        assert_eq!(four.collecting(), 1);
        assert_eq!(four.drain_sealed_sizes(), vec![4]);

        // Alone in the committee, the own acknowledgement is the proof.
        let mut alone = dissemination(1, DisseminationConfig::default());
        let actions = alone.on_transactions(txs, TimestampMs(0));
        assert_eq!(kinds(&actions), ["reserve", "store", "broadcast", "proof"]);
        assert_eq!(alone.collecting(), 0);
    }

    #[test]
    fn a_batch_over_the_collecting_limit_is_stored_but_not_offered() {
        let txs = Workload::new(1, WorkloadConfig::transfers(10)).block(8);
        let config = DisseminationConfig {
            max_collecting: 1,
            ..DisseminationConfig::default()
        };
        let mut d = dissemination(4, config);
        let actions = d.on_transactions(txs, TimestampMs(0));
        assert_eq!(kinds(&actions), ["reserve", "store", "broadcast", "store"]);
        assert_eq!(d.collecting(), 1);
    }

    /// Seals one batch of four transactions at `now`; returns it and the action kinds.
    fn seal_one(
        d: &mut Dissemination,
        workload: &mut Workload,
        now: TimestampMs,
    ) -> (Arc<Batch>, Vec<&'static str>) {
        let actions = d.on_transactions(workload.block(4), now);
        let batch = actions
            .iter()
            .find_map(|a| match a {
                DisseminationAction::StoreBatch(b) => Some(b.clone()),
                _ => None,
            })
            .expect("sealed");
        (batch, kinds(&actions))
    }

    /// Seals batches a ms apart from `*now` until one is designated to `v` alone; returns it
    /// and the action kinds of its sealing.
    fn seal_designated_to(
        d: &mut Dissemination,
        workload: &mut Workload,
        now: &mut u64,
        v: ValidatorIndex,
    ) -> (Arc<Batch>, Vec<&'static str>) {
        // Designations rotate through the committee: a few seals reach any verifier.
        for _ in 0..64 {
            *now += 1;
            let (batch, kinds) = seal_one(d, workload, TimestampMs(*now));
            if designated_verifiers(d.builder.committee(), d.me, batch.sequence) == [v] {
                return (batch, kinds);
            }
        }
        panic!("no batch in 64 was designated to {v}");
    }

    #[test]
    fn a_suspected_verifier_gets_double_sends_then_a_probe_that_clears_it_in_time() {
        let (committee, keys) = committee(4);
        let mut d = dissemination(4, DisseminationConfig::default());
        let mut workload = Workload::new(1, WorkloadConfig::transfers(100));
        let fallback = DisseminationConfig::default().verify_fallback_ms;
        assert_eq!(d.fallback_ms(), fallback);
        let me = ValidatorIndex(0);
        // Sequence 0 is designated to validator 1 (then 2, 3, 1, ...): it stays silent.
        let (first, _) = seal_one(&mut d, &mut workload, TimestampMs(0));
        assert_eq!(
            designated_verifiers(&committee, me, first.sequence),
            [ValidatorIndex(1)]
        );
        assert!(kinds(&d.tick(TimestampMs(fallback - 1))).is_empty());
        assert_eq!(kinds(&d.tick(TimestampMs(fallback))), ["send"]);
        assert_eq!(d.suspected(), 1);
        let mut now = fallback;
        let designated_to_1: Vec<_> = (0..3)
            .map(|_| seal_designated_to(&mut d, &mut workload, &mut now, ValidatorIndex(1)))
            .collect();
        // One strike: every second batch designated to it is a probe, sent once.
        assert!(designated_to_1[0].1.contains(&"send"), "sent twice at once");
        assert!(!designated_to_1[1].1.contains(&"send"), "the probe");
        // Acknowledged in time, the probe clears the suspicion.
        let probe = &designated_to_1[1].0;
        let ack = BatchAck::new(probe.info(), ValidatorIndex(1), &keys[1], CHAIN);
        assert_eq!(kinds(&d.on_ack(&ack, TimestampMs(now))), ["proof"]);
        assert_eq!(d.suspected(), 0);
        let (_, later) = seal_designated_to(&mut d, &mut workload, &mut now, ValidatorIndex(1));
        assert!(!later.contains(&"send"), "trusted again");
    }

    #[test]
    fn the_fallback_follows_the_time_proofs_take() {
        let (_, keys) = committee(4);
        let mut d = dissemination(4, DisseminationConfig::default());
        let mut workload = Workload::new(1, WorkloadConfig::transfers(100));
        let floor = DisseminationConfig::default().verify_fallback_ms;
        let mut now = 0;
        for _ in 0..40 {
            let (batch, _) = seal_one(&mut d, &mut workload, TimestampMs(now));
            // Every proof takes a second: the fallback grows past it, up to its cap.
            now += 1_000;
            let signer =
                designated_verifiers(d.builder.committee(), ValidatorIndex(0), batch.sequence)[0];
            let ack = BatchAck::new(batch.info(), signer, &keys[signer.0 as usize], CHAIN);
            d.on_ack(&ack, TimestampMs(now));
        }
        assert!(d.fallback_ms() > 3_000, "{}", d.fallback_ms());
        assert!(d.fallback_ms() <= floor * MAX_FALLBACK_FACTOR);
    }
}
