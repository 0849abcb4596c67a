//! Batches of transactions and their proofs of availability.
//!
//! A validator seals transactions into a [`Batch`], broadcasts it, and collects [`BatchAck`]s,
//! each a signature over the batch's [`BatchInfo`] by a validator that stored the batch. Acks
//! from more than 1/3 of the stake form a [`ProofOfAvailability`]: at least one honest holder
//! exists, so a block may order the batch by digest alone.

use crate::{
    committee::Committee,
    crypto::{Domain, KeyPair, Signature, signing_message},
    digest::Digest,
    error::{Error, Result},
    ids::{ChainId, Epoch, TimestampMs, ValidatorIndex},
    multisig::{MultiSignature, Threshold},
    transaction::SignedTransaction,
};
use serde::{Deserialize, Serialize};

/// Most transactions in one batch.
pub const MAX_BATCH_TRANSACTIONS: usize = 10_000;
/// Largest encoded batch in bytes.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest a batch may live: validators acknowledge only a batch whose `expires_at` is at most
/// this far ahead of their clock (authors set less, leaving room for clock drift).
pub const MAX_BATCH_LIFETIME_MS: u64 = 120_000;

/// Transactions sealed by one validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The sealing validator.
    pub author: ValidatorIndex,
    /// The epoch it was sealed in.
    pub epoch: Epoch,
    /// The author's batch counter within the epoch.
    pub sequence: u64,
    /// No block with this timestamp or a later one may order the batch: voters refuse such a
    /// proposal, so once the committed chain's time passes it, a batch not ordered by then
    /// never will be and its holders delete it.
    pub expires_at: TimestampMs,
    /// The transactions.
    pub transactions: Vec<SignedTransaction>,
}

impl Batch {
    /// The batch id.
    pub fn digest(&self) -> Digest {
        Digest::of_tagged("keel/batch", self)
    }

    /// The summary acknowledgements sign.
    pub fn info(&self) -> BatchInfo {
        BatchInfo {
            author: self.author,
            epoch: self.epoch,
            sequence: self.sequence,
            expires_at: self.expires_at,
            digest: self.digest(),
            num_transactions: u32::try_from(self.transactions.len()).unwrap_or(u32::MAX),
            num_bytes: u64::try_from(bcs::serialized_size(self).unwrap_or(usize::MAX))
                .unwrap_or(u64::MAX),
        }
    }

    /// Checks the batch's size limits and each transaction's static rules and chain id.
    pub fn validate(&self, chain_id: ChainId) -> Result<()> {
        if self.transactions.len() > MAX_BATCH_TRANSACTIONS {
            return Err(Error::TooLarge {
                what: "batch transaction count",
                size: self.transactions.len(),
                limit: MAX_BATCH_TRANSACTIONS,
            });
        }
        let size = bcs::serialized_size(self).unwrap_or(usize::MAX);
        if size > MAX_BATCH_BYTES {
            return Err(Error::TooLarge {
                what: "batch",
                size,
                limit: MAX_BATCH_BYTES,
            });
        }
        for (i, tx) in self.transactions.iter().enumerate() {
            tx.validate(chain_id).map_err(|e| Error::InvalidField {
                field: format!("transactions[{i}]"),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// What validators sign to acknowledge a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchInfo {
    /// The sealing validator.
    pub author: ValidatorIndex,
    /// The epoch it was sealed in.
    pub epoch: Epoch,
    /// The author's batch counter.
    pub sequence: u64,
    /// When the batch expires (see [`Batch::expires_at`]).
    pub expires_at: TimestampMs,
    /// The batch id.
    pub digest: Digest,
    /// Number of transactions.
    pub num_transactions: u32,
    /// Encoded size.
    pub num_bytes: u64,
}

impl BatchInfo {
    fn message(&self, chain_id: ChainId) -> [u8; 32] {
        signing_message(Domain::BatchAck, self.epoch, chain_id, self)
    }
}

/// One validator's signed statement that it stores a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// The batch acknowledged.
    pub info: BatchInfo,
    /// The acknowledging validator.
    pub signer: ValidatorIndex,
    /// Its signature in [`Domain::BatchAck`].
    pub signature: Signature,
}

impl BatchAck {
    /// Signs an acknowledgement of `info` as validator `signer`.
    pub fn new(info: BatchInfo, signer: ValidatorIndex, key: &KeyPair, chain_id: ChainId) -> Self {
        let signature = key.sign_message(&info.message(chain_id));
        BatchAck {
            info,
            signer,
            signature,
        }
    }

    /// Verifies the signer and signature.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        check_epoch(committee, self.info.epoch)?;
        committee.member(self.signer)?.protocol_key.verify_message(
            &self.info.message(chain_id),
            &self.signature,
            "batch acknowledgement",
        )
    }
}

/// Acknowledgements from more than 1/3 of the stake for one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofOfAvailability {
    /// The batch.
    pub info: BatchInfo,
    /// The holders' signatures.
    pub signatures: MultiSignature,
}

impl ProofOfAvailability {
    /// Verifies the epoch, the signers' stake (validity threshold) and every signature.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        check_epoch(committee, self.info.epoch)?;
        committee.member(self.info.author)?;
        self.signatures.verify(
            committee,
            Threshold::Validity,
            &self.info.message(chain_id),
            "proof of availability",
        )
    }
}

/// Checks that `found` is `committee`'s epoch ([`Error::WrongEpoch`] otherwise).
pub fn check_epoch(committee: &Committee, found: Epoch) -> Result<()> {
    if committee.epoch() != found {
        return Err(Error::WrongEpoch {
            expected: committee.epoch(),
            found,
        });
    }
    Ok(())
}
