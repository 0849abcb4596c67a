//! The checkpoint state machine: builds and signs this validator's checkpoints, aggregates
//! peers' signatures into certificates and adopts certificates from peers. Pure like the
//! consensus core: [`CheckpointMachine`] does no I/O and reads no clock; each `handle_*` entry
//! point returns an outcome and the [`CheckpointAction`]s the node carries out, in order.
//!
//! ```text
//!  executed height h ──▶ handle_executed ──(h a multiple of K, or an epoch end)──▶ sign
//!        ──▶ [PersistOwn, Broadcast] (+ PersistCertified when that completes a quorum)
//!  peer signature ──▶ handle_signature ──verify, bounded──▶ candidate (sequence, digest)
//!        ──quorum──▶ [PersistCertified]
//!  peer certificate ──▶ handle_certified ──verify, newer──▶ [PersistCertified]
//! ```
//!
//! Rules and invariants:
//! - **Chain.** Checkpoint `s` names the digest of checkpoint `s - 1`. The machine keeps the
//!   *tip*: the newest checkpoint it knows to be on the chain, its own (built from its own
//!   execution) or a certified one, whichever has the higher sequence; at equal sequences the
//!   certified one wins. It signs height `h` as `tip.sequence + 1` only if the tip is the
//!   previous checkpoint, i.e. at or after the last multiple of K below `h` (a node that
//!   missed one, e.g. crashed between executing a checkpoint height and building it, signs
//!   nothing until it adopts a certified checkpoint from its peers: [`ExecutedOutcome::Gap`]).
//!   Checkpoints are built deterministically from execution, so honest validators sign equal
//!   content, and re-signing after a restart signs the same bytes (never an equivocation).
//! - **Durable before visible.** Every signature this node makes is returned as
//!   `PersistOwn` *before* the `Broadcast` carrying it; the node carries them out in order.
//! - **Bounded buffering.** Peer signatures are kept only for sequences above the latest
//!   certified one and within `window` of the tip: `(max(certified, tip - window), tip +
//!   window]`. Older ones are [`SignatureOutcome::Stale`] (and kept ones fall out as the tip
//!   moves on, even while certification stalls), further ones
//!   [`SignatureOutcome::OutOfWindow`] (dropped; the node may fetch the latest certificate
//!   instead). Per sequence at most one signature per committee member is kept (the first):
//!   the same signature again is a `Duplicate`, a valid signature over other content an
//!   `Equivocation`, counted and ignored. So the buffer holds at most
//!   `2 × window × committee size` signatures, and a signature for a sequence not yet
//!   executed waits there until this node signs its own or a quorum certifies it.
//! - **Cheap checks first.** Window, membership and the one-per-signer rule are checked before
//!   any signature verification; a signature is verified at most once.
//! - **Certification.** More than 2/3 of the stake over one digest certifies it, whether or not
//!   this node has executed that height (the certificate stands on its own). A certificate is
//!   adopted only if newer than the latest; if it contradicts what this node built, a
//!   [`CheckpointAction::Diverged`] reports it (this node's execution diverged) and the
//!   certified checkpoint still becomes the tip. When this node later executes the height of a
//!   checkpoint certified without it, it compares its own result with the certificate
//!   (`Diverged` if they differ) and signs it if they agree (stored, not broadcast).
//!
//! - **Epochs.** An executed block that ends the epoch gets a checkpoint whatever its height,
//!   naming the next committee and signed under the ending one; the machine then moves to the
//!   next committee (keeping the previous one, so late signatures and the certificate of the
//!   epoch-ending checkpoint still verify). A node that is not in the next committee signs
//!   nothing from then on but still follows certified checkpoints.
//!
//! This module does not store, send or fetch anything, and knows nothing of epochs beyond the
//! explicit epoch-end input (the next committee it is given).

use crate::config::CheckpointConfig;
use keel_types::{
    CertifiedCheckpoint, ChainId, Checkpoint, CheckpointSignature, Committee, Digest, Height,
    KeyPair, MultiSignature, Signature, ValidatorIndex,
};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

/// What the machine is built from.
pub struct CheckpointDeps {
    /// Interval and window.
    pub config: CheckpointConfig,
    /// The chain signed for.
    pub chain_id: ChainId,
    /// The committee signatures are checked against.
    pub committee: Committee,
    /// This validator's index (`None`: not in the committee; it signs nothing).
    pub me: Option<ValidatorIndex>,
    /// Its protocol key.
    pub key: Arc<KeyPair>,
    /// The genesis checkpoint (sequence 0; see [`Checkpoint::genesis`]).
    pub genesis: Checkpoint,
    /// What the store held at start.
    pub restored: Restored,
}

/// The checkpoint state read back from the store at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The latest certified checkpoint.
    pub certified: Option<CertifiedCheckpoint>,
    /// This validator's latest own signature.
    pub own: Option<CheckpointSignature>,
}

/// An executed block, as the execution thread reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// Its height.
    pub height: Height,
    /// Its digest.
    pub block: Digest,
    /// The state root after it.
    pub state_root: Digest,
    /// Transactions executed since genesis, through it.
    pub executed_transactions: u64,
    /// The next epoch's committee when this block ends the epoch (a checkpoint is then built
    /// whatever the height).
    pub epoch_end: Option<Committee>,
}

/// What the node must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointAction {
    /// Store this node's signature (its latest own checkpoint); completes before the
    /// `Broadcast` that follows it.
    PersistOwn(CheckpointSignature),
    /// Send this node's signature to every other validator.
    Broadcast(CheckpointSignature),
    /// Store a newly certified checkpoint (it becomes the latest).
    PersistCertified(CertifiedCheckpoint),
    /// A certified checkpoint contradicts what this node built at `sequence`: its execution
    /// diverged from the quorum's. The certified one is adopted; the node should alert.
    Diverged {
        /// The sequence where the two differ.
        sequence: u64,
        /// What this node built there.
        own: Digest,
        /// What the quorum certified.
        certified: Digest,
    },
}

/// What became of an executed height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutedOutcome {
    /// Not a checkpoint height.
    NotABoundary,
    /// Already covered by the tip (a re-report after a restart, a height below a checkpoint
    /// certified by peers first, or one whose certificate contradicts this node's execution).
    AlreadyKnown,
    /// Signed checkpoint `sequence`.
    Signed {
        /// The new checkpoint's sequence.
        sequence: u64,
    },
    /// Built, not signed: this node is not in the committee.
    NotAMember,
    /// The previous checkpoint is unknown here, so nothing is signed (see the module rules).
    Gap {
        /// The height of the newest checkpoint known.
        tip_height: Height,
    },
}

/// What became of a peer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureOutcome {
    /// Kept; no quorum yet.
    Added,
    /// Kept, and it completed a certificate.
    Certified,
    /// The same signer's signature over the same content is already kept.
    Duplicate,
    /// At or below the latest certified sequence.
    Stale,
    /// Beyond the window of kept sequences.
    OutOfWindow,
    /// A valid signature by a signer that already signed other content at this sequence.
    Equivocation,
    /// Not a committee member, wrong epoch or chain, or a bad signature.
    Invalid(keel_types::Error),
}

impl SignatureOutcome {
    /// The metric label of a refused signature (`None` when kept).
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            SignatureOutcome::Added | SignatureOutcome::Certified => None,
            SignatureOutcome::Duplicate => Some("duplicate"),
            SignatureOutcome::Stale => Some("stale"),
            SignatureOutcome::OutOfWindow => Some("out_of_window"),
            SignatureOutcome::Equivocation => Some("equivocation"),
            SignatureOutcome::Invalid(_) => Some("invalid"),
        }
    }
}

/// What became of a peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertifiedOutcome {
    /// Verified and newer than the latest: adopted.
    Adopted,
    /// Not newer than the latest certified checkpoint.
    Stale,
    /// Does not verify against the committee.
    Invalid(keel_types::Error),
}

/// An outcome and the actions it calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled<O> {
    /// What happened.
    pub outcome: O,
    /// What the node must do, in order.
    pub actions: Vec<CheckpointAction>,
}

/// Signatures over one checkpoint content.
#[derive(Debug)]
struct Candidate {
    checkpoint: Checkpoint,
    signatures: Vec<(ValidatorIndex, Signature)>,
    stake: u64,
}

/// Signatures kept for one sequence.
#[derive(Debug, Default)]
struct Pending {
    /// The digest each signer signed (its first signature).
    signed: BTreeMap<ValidatorIndex, Digest>,
    /// Signatures by digest.
    candidates: HashMap<Digest, Candidate>,
}

/// The checkpoint state machine (see the module documentation).
pub struct CheckpointMachine {
    config: CheckpointConfig,
    chain_id: ChainId,
    committee: Committee,
    /// The committee of the previous epoch, once an epoch ended here.
    previous: Option<Committee>,
    /// This node's index in `committee` (`None`: not a member, signs nothing).
    me: Option<ValidatorIndex>,
    key: Arc<KeyPair>,
    /// The key to sign with from the next epoch on, when it differs (a rotated protocol key).
    next_key: Option<Arc<KeyPair>>,
    tip: Checkpoint,
    certified: Option<CertifiedCheckpoint>,
    own: Option<CheckpointSignature>,
    pending: BTreeMap<u64, Pending>,
}

impl CheckpointMachine {
    /// A machine resuming from what the store held.
    pub fn new(deps: CheckpointDeps) -> Self {
        let CheckpointDeps {
            config,
            chain_id,
            committee,
            me,
            key,
            genesis,
            restored,
        } = deps;
        let mut machine = CheckpointMachine {
            config: CheckpointConfig {
                // An interval of 0 would make every height a boundary of nothing.
                interval: config.interval.max(1),
                ..config
            },
            chain_id,
            committee,
            previous: None,
            me,
            key,
            next_key: None,
            tip: genesis,
            certified: None,
            own: None,
            pending: BTreeMap::new(),
        };
        if let Some(own) = restored.own {
            if own.checkpoint.sequence > machine.tip.sequence {
                machine.tip = own.checkpoint.clone();
            }
            machine.own = Some(own);
        }
        if let Some(certified) = restored.certified {
            if certified.checkpoint.sequence >= machine.tip.sequence {
                machine.tip = certified.checkpoint.clone();
            }
            machine.certified = Some(certified);
        }
        // The own signature, if not yet certified, counts towards its certificate again.
        if let Some(own) = machine.uncertified_own().cloned() {
            let digest = own.checkpoint.digest();
            machine.add(own, digest);
        }
        machine
    }

    /// The latest certified checkpoint (`None`: only genesis so far).
    pub fn latest_certified(&self) -> Option<&CertifiedCheckpoint> {
        self.certified.as_ref()
    }

    /// The latest certified sequence (0: genesis).
    pub fn certified_sequence(&self) -> u64 {
        self.certified.as_ref().map_or(0, |c| c.checkpoint.sequence)
    }

    /// The sequence of this node's latest own signature, if any.
    pub fn signed_sequence(&self) -> Option<u64> {
        self.own.as_ref().map(|s| s.checkpoint.sequence)
    }

    /// The newest checkpoint known to be on the chain.
    pub fn tip(&self) -> &Checkpoint {
        &self.tip
    }

    /// This node's latest signature while it is not yet certified (to send again: gossip is
    /// best effort, and a peer that restarted may have missed it).
    pub fn uncertified_own(&self) -> Option<&CheckpointSignature> {
        self.own
            .as_ref()
            .filter(|s| s.checkpoint.sequence > self.certified_sequence())
    }

    /// Signatures kept, over all sequences (bounded by window × committee size).
    pub fn kept_signatures(&self) -> usize {
        self.pending.values().map(|p| p.signed.len()).sum()
    }

    /// Sequences at or below this are too far behind the tip to keep signatures for.
    fn floor(&self) -> u64 {
        self.tip.sequence.saturating_sub(self.config.window)
    }

    /// Whether `height` gets a checkpoint (without an epoch end).
    pub fn is_boundary(&self, height: Height) -> bool {
        height.0 > 0 && height.0.is_multiple_of(self.config.interval)
    }

    /// The execution thread finished a block. A block that ends the epoch moves the machine to
    /// the next committee after its checkpoint is handled, whichever way (built and signed,
    /// checked against the peers' certificate, already known, or behind a gap).
    pub fn handle_executed(&mut self, executed: Executed) -> Handled<ExecutedOutcome> {
        let next = executed.epoch_end.clone();
        let handled = self.checkpoint_executed(executed);
        if let Some(next) = next {
            self.switch_epoch(next);
        }
        handled
    }

    /// From the epoch that `next` follows to `next`'s: signatures of the old epoch are still
    /// checked against the old committee; signing goes on with the next key if one was set.
    fn switch_epoch(&mut self, next: Committee) {
        if next.epoch() <= self.committee.epoch() {
            return;
        }
        if let Some(key) = self.next_key.take() {
            self.key = key;
        }
        self.me = next.index_of(&self.key.public());
        self.previous = Some(std::mem::replace(&mut self.committee, next));
    }

    fn checkpoint_executed(&mut self, executed: Executed) -> Handled<ExecutedOutcome> {
        let h = executed.height;
        if executed.epoch_end.is_none() && !self.is_boundary(h) {
            return handled(ExecutedOutcome::NotABoundary, Vec::new());
        }
        if h == self.tip.last_height && self.signed_sequence() < Some(self.tip.sequence) {
            return self.check_certified(executed);
        }
        if h <= self.tip.last_height {
            return handled(ExecutedOutcome::AlreadyKnown, Vec::new());
        }
        // The last multiple of the interval strictly below h: the tip must be at or after it,
        // or a checkpoint in between is missing here.
        let previous_boundary = (h.0 - 1) / self.config.interval * self.config.interval;
        if self.tip.last_height.0 < previous_boundary {
            return handled(
                ExecutedOutcome::Gap {
                    tip_height: self.tip.last_height,
                },
                Vec::new(),
            );
        }
        let checkpoint = Checkpoint {
            epoch: self.committee.epoch(),
            sequence: self.tip.sequence + 1,
            previous: self.tip.digest(),
            last_block: executed.block,
            last_height: h,
            state_root: executed.state_root,
            executed_transactions: executed.executed_transactions,
            next_committee: executed.epoch_end,
        };
        let sequence = checkpoint.sequence;
        let digest = checkpoint.digest();
        self.tip = checkpoint.clone();
        self.pending = self.pending.split_off(&(self.floor() + 1));
        let mut actions = Vec::new();
        let outcome = match self.me {
            Some(me) => {
                let own = CheckpointSignature::new(checkpoint, me, &self.key, self.chain_id);
                self.own = Some(own.clone());
                actions.push(CheckpointAction::PersistOwn(own.clone()));
                actions.push(CheckpointAction::Broadcast(own.clone()));
                if let Some(certified) = self.add(own, digest) {
                    self.adopt(certified, &mut actions);
                }
                ExecutedOutcome::Signed { sequence }
            }
            None => ExecutedOutcome::NotAMember,
        };
        handled(outcome, actions)
    }

    /// This node executed the height of a checkpoint its peers certified first: it checks its
    /// own execution against the certificate and, if they agree, signs it too (stored, not
    /// broadcast: the certificate needs no more signatures).
    fn check_certified(&mut self, executed: Executed) -> Handled<ExecutedOutcome> {
        let tip = &self.tip;
        let checkpoint = Checkpoint {
            epoch: tip.epoch,
            sequence: tip.sequence,
            previous: tip.previous,
            last_block: executed.block,
            last_height: executed.height,
            state_root: executed.state_root,
            executed_transactions: executed.executed_transactions,
            next_committee: executed.epoch_end,
        };
        let (own, certified) = (checkpoint.digest(), tip.digest());
        if own != certified {
            let diverged = CheckpointAction::Diverged {
                sequence: checkpoint.sequence,
                own,
                certified,
            };
            return handled(ExecutedOutcome::AlreadyKnown, vec![diverged]);
        }
        let sequence = checkpoint.sequence;
        let Some(me) = self.me else {
            return handled(ExecutedOutcome::NotAMember, Vec::new());
        };
        let signature = CheckpointSignature::new(checkpoint, me, &self.key, self.chain_id);
        self.own = Some(signature.clone());
        handled(
            ExecutedOutcome::Signed { sequence },
            vec![CheckpointAction::PersistOwn(signature)],
        )
    }

    /// The committee that signs checkpoints of `epoch` (the current or the previous one).
    fn committee_of(&self, epoch: keel_types::Epoch) -> keel_types::Result<&Committee> {
        if let Some(previous) = &self.previous
            && previous.epoch() == epoch
        {
            return Ok(previous);
        }
        keel_types::batch::check_epoch(&self.committee, epoch)?;
        Ok(&self.committee)
    }

    /// Signs with `key` from the next epoch on (a rotated protocol key): the checkpoint that
    /// ends this epoch is still signed with the current one.
    pub fn set_next_key(&mut self, key: Arc<KeyPair>) {
        self.next_key = Some(key);
    }

    /// This node's index in the current committee.
    pub fn me(&self) -> Option<ValidatorIndex> {
        self.me
    }

    /// A peer's signature arrived (unverified).
    pub fn handle_signature(
        &mut self,
        signature: CheckpointSignature,
    ) -> Handled<SignatureOutcome> {
        let sequence = signature.checkpoint.sequence;
        if sequence <= self.certified_sequence() || sequence <= self.floor() {
            return handled(SignatureOutcome::Stale, Vec::new());
        }
        if sequence > self.tip.sequence.saturating_add(self.config.window) {
            return handled(SignatureOutcome::OutOfWindow, Vec::new());
        }
        let committee = match self.committee_of(signature.checkpoint.epoch) {
            Ok(c) => c,
            Err(e) => return handled(SignatureOutcome::Invalid(e), Vec::new()),
        };
        if let Err(e) = committee.member(signature.signer) {
            return handled(SignatureOutcome::Invalid(e), Vec::new());
        }
        let digest = signature.checkpoint.digest();
        let earlier = self
            .pending
            .get(&sequence)
            .and_then(|p| p.signed.get(&signature.signer))
            .copied();
        if earlier == Some(digest) {
            return handled(SignatureOutcome::Duplicate, Vec::new());
        }
        if let Err(e) = signature.verify(committee, self.chain_id) {
            return handled(SignatureOutcome::Invalid(e), Vec::new());
        }
        if earlier.is_some() {
            return handled(SignatureOutcome::Equivocation, Vec::new());
        }
        let mut actions = Vec::new();
        let outcome = match self.add(signature, digest) {
            Some(certified) => {
                self.adopt(certified, &mut actions);
                SignatureOutcome::Certified
            }
            None => SignatureOutcome::Added,
        };
        handled(outcome, actions)
    }

    /// A peer sent a certified checkpoint (unverified), e.g. answering a request.
    pub fn handle_certified(
        &mut self,
        certified: CertifiedCheckpoint,
    ) -> Handled<CertifiedOutcome> {
        if certified.checkpoint.sequence <= self.certified_sequence() {
            return handled(CertifiedOutcome::Stale, Vec::new());
        }
        let verified = self
            .committee_of(certified.checkpoint.epoch)
            .and_then(|c| certified.verify(c, self.chain_id));
        if let Err(e) = verified {
            return handled(CertifiedOutcome::Invalid(e), Vec::new());
        }
        let mut actions = Vec::new();
        self.adopt(certified, &mut actions);
        handled(CertifiedOutcome::Adopted, actions)
    }

    /// Keeps a verified signature (first per signer and sequence, checked by the caller);
    /// returns the certificate it completes, if any.
    fn add(
        &mut self,
        signature: CheckpointSignature,
        digest: Digest,
    ) -> Option<CertifiedCheckpoint> {
        let sequence = signature.checkpoint.sequence;
        let committee = self.committee_of(signature.checkpoint.epoch).ok()?;
        let stake = committee.stake(signature.signer);
        let threshold = committee.quorum_threshold();
        let pending = self.pending.entry(sequence).or_default();
        if pending.signed.insert(signature.signer, digest).is_some() {
            return None;
        }
        let candidate = pending
            .candidates
            .entry(digest)
            .or_insert_with(|| Candidate {
                checkpoint: signature.checkpoint,
                signatures: Vec::new(),
                stake: 0,
            });
        candidate
            .signatures
            .push((signature.signer, signature.signature));
        candidate.stake = candidate.stake.saturating_add(stake);
        if candidate.stake < threshold {
            return None;
        }
        let candidate = pending.candidates.remove(&digest)?;
        Some(CertifiedCheckpoint {
            checkpoint: candidate.checkpoint,
            signatures: MultiSignature::from_signatures(candidate.signatures),
        })
    }

    /// Makes a verified certificate newer than the latest the latest.
    fn adopt(&mut self, certified: CertifiedCheckpoint, actions: &mut Vec<CheckpointAction>) {
        let sequence = certified.checkpoint.sequence;
        let digest = certified.checkpoint.digest();
        if self.tip.sequence == sequence && self.tip.digest() != digest {
            actions.push(CheckpointAction::Diverged {
                sequence,
                own: self.tip.digest(),
                certified: digest,
            });
        } else if self.tip.sequence + 1 == sequence
            && self.tip.digest() != certified.checkpoint.previous
        {
            actions.push(CheckpointAction::Diverged {
                sequence: self.tip.sequence,
                own: self.tip.digest(),
                certified: certified.checkpoint.previous,
            });
        }
        if sequence >= self.tip.sequence {
            self.tip = certified.checkpoint.clone();
        }
        self.pending = self.pending.split_off(&(sequence + 1));
        self.certified = Some(certified.clone());
        actions.push(CheckpointAction::PersistCertified(certified));
    }
}

fn handled<O>(outcome: O, actions: Vec<CheckpointAction>) -> Handled<O> {
    Handled { outcome, actions }
}

#[cfg(test)]
#[path = "checkpoints_tests.rs"]
mod tests;
