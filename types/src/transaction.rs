//! Client transactions: a sender's signed, nonce-ordered list of ops that apply atomically.
//!
//! Transactions are signed in [`Domain::Transaction`] with the chain id bound in. They are signed
//! for [`TRANSACTION_EPOCH`] rather than the current epoch: a client need not track epochs, and a
//! transaction in flight at an epoch boundary stays valid; replay is prevented by the nonce and
//! the expiry instead.

use crate::{
    account::Address,
    crypto::{Domain, KeyPair, PublicKey, Signature, signing_message, signing_message_of_encoding},
    digest::Digest,
    encoding,
    error::{Error, Result},
    governance::CommitteeChange,
    ids::{ChainId, Epoch, Nonce, TimestampMs},
};
use serde::{Deserialize, Serialize};

/// Most ops in one transaction.
pub const MAX_OPS: usize = 32;
/// Longest object key in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Longest object value in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest encoded signed transaction in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 128 * 1024;
/// The epoch value bound into transaction signatures (transactions are epoch-independent).
pub const TRANSACTION_EPOCH: Epoch = Epoch(0);

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Moves `amount` from the sender to `to`.
    Transfer {
        /// Recipient; not the sender.
        to: Address,
        /// Positive amount.
        amount: u64,
    },
    /// Creates or overwrites the sender's object `key`.
    Put {
        /// 1..=[`MAX_KEY_LEN`] bytes.
        key: Vec<u8>,
        /// At most [`MAX_VALUE_LEN`] bytes.
        value: Vec<u8>,
    },
    /// Deletes the sender's object `key` (a no-op when absent).
    Delete {
        /// 1..=[`MAX_KEY_LEN`] bytes.
        key: Vec<u8>,
    },
    /// Writes `value` only if the object's version is `expected_version` (0: absent).
    CompareAndSwap {
        /// 1..=[`MAX_KEY_LEN`] bytes.
        key: Vec<u8>,
        /// The version the object must have.
        expected_version: u64,
        /// At most [`MAX_VALUE_LEN`] bytes.
        value: Vec<u8>,
    },
    /// A validator's vote for a committee change (the sender must be a committee member's
    /// protocol key; see [`crate::governance`]).
    Governance {
        /// The epoch the vote is for (a vote of another epoch fails).
        epoch: Epoch,
        /// The change voted for.
        change: CommitteeChange,
    },
}

/// The signed-over content of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The network this transaction is for.
    pub chain_id: ChainId,
    /// The sender's key; the sender's address is derived from it.
    pub sender: PublicKey,
    /// Must equal the sender account's nonce when executed.
    pub nonce: Nonce,
    /// The transaction is invalid in blocks with a later timestamp.
    pub expiry: TimestampMs,
    /// 1..=[`MAX_OPS`] ops, applied all or none.
    pub ops: Vec<Op>,
}

fn check_key(key: &[u8], field: impl FnOnce() -> String) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidField {
            field: field(),
            reason: format!("key is {} bytes, must be 1..={MAX_KEY_LEN}", key.len()),
        });
    }
    Ok(())
}

fn check_value(value: &[u8], field: impl FnOnce() -> String) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::InvalidField {
            field: field(),
            reason: format!(
                "value is {} bytes, over the limit of {MAX_VALUE_LEN}",
                value.len()
            ),
        });
    }
    Ok(())
}

impl Transaction {
    /// The sender's address.
    pub fn sender_address(&self) -> Address {
        Address::from_public_key(&self.sender)
    }

    /// Checks the data model's static rules: op count, key and value sizes, positive amounts,
    /// no transfers to self. State-dependent checks (nonce, balance, expiry) happen elsewhere.
    pub fn validate(&self) -> Result<()> {
        if self.ops.is_empty() {
            return Err(Error::InvalidField {
                field: "ops".into(),
                reason: "a transaction needs at least one op".into(),
            });
        }
        if self.ops.len() > MAX_OPS {
            return Err(Error::InvalidField {
                field: "ops".into(),
                reason: format!("{} ops, over the limit of {MAX_OPS}", self.ops.len()),
            });
        }
        let sender = self.sender_address();
        for (i, op) in self.ops.iter().enumerate() {
            match op {
                Op::Transfer { to, amount } => {
                    if *amount == 0 {
                        return Err(Error::InvalidField {
                            field: format!("ops[{i}].amount"),
                            reason: "transfer amount must be positive".into(),
                        });
                    }
                    if *to == sender {
                        return Err(Error::InvalidField {
                            field: format!("ops[{i}].to"),
                            reason: "transfer to the sender itself".into(),
                        });
                    }
                }
                Op::Put { key, value } => {
                    check_key(key, || format!("ops[{i}].key"))?;
                    check_value(value, || format!("ops[{i}].value"))?;
                }
                Op::Delete { key } => check_key(key, || format!("ops[{i}].key"))?,
                Op::CompareAndSwap { key, value, .. } => {
                    check_key(key, || format!("ops[{i}].key"))?;
                    check_value(value, || format!("ops[{i}].value"))?;
                }
                Op::Governance { change, .. } => {
                    if self.ops.len() != 1 {
                        return Err(Error::InvalidField {
                            field: format!("ops[{i}]"),
                            reason: "a governance vote must be the transaction's only op".into(),
                        });
                    }
                    change.validate(self.chain_id, &format!("ops[{i}].change"))?;
                }
            }
        }
        Ok(())
    }

    /// The message the sender signs.
    pub fn signing_message(&self) -> [u8; 32] {
        signing_message(Domain::Transaction, TRANSACTION_EPOCH, self.chain_id, self)
    }

    /// Signs with `key` (which must be the sender's key for the result to verify).
    pub fn sign(self, key: &KeyPair) -> SignedTransaction {
        let signature = key.sign_message(&self.signing_message());
        SignedTransaction {
            transaction: self,
            signature,
        }
    }

    /// The transaction id.
    pub fn digest(&self) -> Digest {
        Digest::of_tagged(TRANSACTION_TAG, self)
    }

    /// The id, the signing message and the encoded size, from one encoding (admission needs
    /// all three for every transaction).
    pub fn identify(&self) -> Identified {
        let encoding = encoding::encode(self);
        Identified {
            digest: Digest::of_tagged_encoding(TRANSACTION_TAG, &encoding),
            signing_message: signing_message_of_encoding(
                Domain::Transaction,
                TRANSACTION_EPOCH,
                self.chain_id,
                &encoding,
            ),
            encoded_len: encoding.len(),
        }
    }
}

/// What [`Transaction::identify`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identified {
    /// The transaction id.
    pub digest: Digest,
    /// The message its sender signs.
    pub signing_message: [u8; 32],
    /// Bytes of the transaction's encoding (without the signature).
    pub encoded_len: usize,
}

const TRANSACTION_TAG: &str = "keel/transaction";

/// A transaction with its sender's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransaction {
    /// The signed-over content.
    pub transaction: Transaction,
    /// The sender's signature in [`Domain::Transaction`].
    pub signature: Signature,
}

impl SignedTransaction {
    /// Decodes an untrusted encoding, refusing more than [`MAX_TRANSACTION_BYTES`], and checks
    /// the static rules. The signature is *not* checked here (admission batches that).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let tx: SignedTransaction =
            encoding::decode(bytes, MAX_TRANSACTION_BYTES, "signed transaction")?;
        tx.transaction.validate()?;
        Ok(tx)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// The transaction id (the digest of the signed-over content).
    pub fn digest(&self) -> Digest {
        self.transaction.digest()
    }

    /// Checks the static rules, the encoded size and the chain id.
    pub fn validate(&self, chain_id: ChainId) -> Result<()> {
        if self.transaction.chain_id != chain_id {
            return Err(Error::WrongChainId {
                expected: chain_id,
                found: self.transaction.chain_id,
            });
        }
        let size = bcs::serialized_size(self).unwrap_or(usize::MAX);
        if size > MAX_TRANSACTION_BYTES {
            return Err(Error::TooLarge {
                what: "signed transaction",
                size,
                limit: MAX_TRANSACTION_BYTES,
            });
        }
        self.transaction.validate()
    }

    /// Verifies the sender's signature.
    pub fn verify_signature(&self) -> Result<()> {
        self.transaction.sender.verify_message(
            &self.transaction.signing_message(),
            &self.signature,
            "transaction",
        )
    }
}
