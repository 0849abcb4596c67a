//! A peer's batch on receipt: checked, every transaction signature verified once, then stored
//! and acknowledged — in that order — by a validator that verifies it; stored unverified, and
//! not acknowledged, by one that does not (below).
//!
//! **Designated verifiers (validity certificates).** A proof of availability needs
//! acknowledgements from more than 1/3 of the stake, and an acknowledgement is only ever signed
//! after every signature in the batch verified: so each proof is also a validity certificate
//! (at least one honest signer checked every signature), and a validator that executes a
//! certified batch need not check them again. Only enough validators to form the proof verify
//! a batch on its first copy: its author (which verified each transaction at admission) and
//! the [`designated_verifiers`] for its sequence, rotating over the others so each carries an
//! even share. The rest store the batch unverified and do not acknowledge it (they need it to
//! execute). A second copy of a batch already held (the author offers it again when its proof
//! is late, or at once when a designated verifier looks down) is verified and acknowledged by
//! whoever holds it. With `all_verify` every receiver verifies every first copy (the rule
//! before).
//!
//! [`accept_peer_batch`] needs no shared state (a [`BatchVerifier`] is a cheap clone of the
//! committee and this node's key), so the node runs it on a blocking pool, off every lock. It
//! does no I/O either: it answers with the two actions the node carries out in order,
//! `StoreBatch` then `SendAck`, so an acknowledgement — this validator's signed word that it
//! holds the batch — never leaves before the batch is stored.

use crate::{batching::designated_verifiers, dissemination::DisseminationAction};
use keel_types::{
    Batch, BatchAck, BatchInfo, ChainId, Committee, KeyPair, TimestampMs, ValidatorIndex,
    batch::MAX_BATCH_LIFETIME_MS,
    crypto::{SignedMessage, verify_batch},
};
use std::sync::Arc;

/// Why a batch from a peer was refused (no acknowledgement is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchRejection {
    /// The sender is not the batch's author.
    #[error("batch authored by {author} arrived from {sender}")]
    NotAuthor {
        /// The batch's author.
        author: ValidatorIndex,
        /// Who sent it.
        sender: ValidatorIndex,
    },
    /// Wrong epoch, oversize, or a transaction breaks a static rule (names it).
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// A transaction's signature does not verify.
    #[error("transactions[{index}] has an invalid signature")]
    BadSignature {
        /// The first bad transaction.
        index: usize,
    },
}

/// Checks peers' batches and signs acknowledgements for this validator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BatchVerifier {
    committee: Committee,
    chain_id: ChainId,
    me: ValidatorIndex,
    key: Arc<KeyPair>,
    all_verify: bool,
}

impl BatchVerifier {
    /// A verifier for batches of `committee`'s epoch on `chain_id`, acknowledging as `me`
    /// with `key` (this validator's protocol key).
    pub fn new(
        committee: Committee,
        chain_id: ChainId,
        me: ValidatorIndex,
        key: Arc<KeyPair>,
    ) -> Self {
        BatchVerifier {
            committee,
            chain_id,
            me,
            key,
            all_verify: false,
        }
    }

    /// The same verifier, designated for every batch when `all_verify` is set (see the
    /// module documentation).
    pub fn with_all_verify(mut self, all_verify: bool) -> Self {
        self.all_verify = all_verify;
        self
    }

    /// The epoch whose batches it checks.
    pub fn epoch(&self) -> keel_types::Epoch {
        self.committee.epoch()
    }

    /// Whether this validator verifies and acknowledges `info`'s batch on its first copy.
    pub fn is_designated(&self, info: &BatchInfo) -> bool {
        self.all_verify
            || designated_verifiers(&self.committee, info.author, info.sequence).contains(&self.me)
    }

    /// The checks that need neither hashing nor signatures: the sender is the author, the
    /// epoch is this verifier's, and the expiry is within [`check_expiry`]'s window. Run
    /// before anything is counted for the batch's author.
    pub fn precheck(
        &self,
        sender: ValidatorIndex,
        batch: &Batch,
        now: TimestampMs,
    ) -> Result<(), BatchRejection> {
        if batch.author != sender {
            return Err(BatchRejection::NotAuthor {
                author: batch.author,
                sender,
            });
        }
        if batch.epoch != self.committee.epoch() {
            return Err(BatchRejection::Invalid(format!(
                "epoch {} is not the current epoch {}",
                batch.epoch,
                self.committee.epoch()
            )));
        }
        check_expiry(batch.expires_at, now)
    }

    /// [`BatchVerifier::precheck`] and the batch's sizes and static rules: everything but
    /// the signatures.
    fn check_unsigned(
        &self,
        sender: ValidatorIndex,
        batch: &Batch,
        now: TimestampMs,
    ) -> Result<(), BatchRejection> {
        self.precheck(sender, batch, now)?;
        batch
            .validate(self.chain_id)
            .map_err(|e| BatchRejection::Invalid(e.to_string()))
    }

    /// Validates `batch` from `sender` ([`BatchVerifier::precheck`], sizes, static rules),
    /// verifies every transaction signature in one batch verification, and signs the
    /// acknowledgement.
    fn check(
        &self,
        sender: ValidatorIndex,
        batch: &Batch,
        info: BatchInfo,
        now: TimestampMs,
    ) -> Result<BatchAck, BatchRejection> {
        self.check_unsigned(sender, batch, now)?;
        let messages: Vec<[u8; 32]> = batch
            .transactions
            .iter()
            .map(|t| t.transaction.signing_message())
            .collect();
        let items: Vec<SignedMessage<'_>> = batch
            .transactions
            .iter()
            .zip(&messages)
            .map(|(t, m)| SignedMessage {
                message: m,
                key: &t.transaction.sender,
                signature: &t.signature,
            })
            .collect();
        verify_batch(&items).map_err(|bad| BatchRejection::BadSignature {
            index: bad.first().copied().unwrap_or(0),
        })?;
        Ok(BatchAck::new(info, self.me, &self.key, self.chain_id))
    }
}

/// A batch is acknowledged only while it can still be ordered (`expires_at` after `now`) and
/// if it expires within [`MAX_BATCH_LIFETIME_MS`] of `now`: what a holder stores is bounded in
/// time as well as in size.
pub fn check_expiry(expires_at: TimestampMs, now: TimestampMs) -> Result<(), BatchRejection> {
    if expires_at <= now {
        return Err(BatchRejection::Invalid(format!(
            "expires_at {expires_at} is not after this validator's clock {now}"
        )));
    }
    if expires_at.0 - now.0 > MAX_BATCH_LIFETIME_MS {
        return Err(BatchRejection::Invalid(format!(
            "expires_at {expires_at} is more than {MAX_BATCH_LIFETIME_MS} ms after this \
             validator's clock {now}"
        )));
    }
    Ok(())
}

/// Accepts a batch `sender` sent, verifying it: checks it with `verifier` and answers
/// `[StoreBatch(batch), SendAck { to: sender, ack }]`, to be carried out in that order (the
/// acknowledgement leaves only once the batch is stored). A refused batch yields no action.
pub fn accept_peer_batch(
    verifier: &BatchVerifier,
    sender: ValidatorIndex,
    batch: Batch,
    now: TimestampMs,
) -> Result<Vec<DisseminationAction>, BatchRejection> {
    let info = batch.info();
    accept_peer_batch_with_info(verifier, sender, batch, info, now, true)
}

/// [`accept_peer_batch`] for a caller that already computed `batch.info()` (a hash of the
/// whole batch: the node needs it first for the author's quota). With `verify` false (this
/// validator is not designated for the batch's first copy) the signatures are not checked and
/// the answer is `[StoreBatch(batch)]` alone: no acknowledgement.
pub fn accept_peer_batch_with_info(
    verifier: &BatchVerifier,
    sender: ValidatorIndex,
    batch: Batch,
    info: BatchInfo,
    now: TimestampMs,
    verify: bool,
) -> Result<Vec<DisseminationAction>, BatchRejection> {
    if !verify {
        verifier.check_unsigned(sender, &batch, now)?;
        return Ok(vec![DisseminationAction::StoreBatch(Arc::new(batch))]);
    }
    let ack = verifier.check(sender, &batch, info, now)?;
    Ok(vec![
        DisseminationAction::StoreBatch(Arc::new(batch)),
        DisseminationAction::SendAck { to: sender, ack },
    ])
}
