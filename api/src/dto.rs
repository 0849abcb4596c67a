//! The JSON shapes of the public API and their conversions. Binary values (keys, digests,
//! signatures, object keys and values) are lowercase hex; amounts and counters are numbers.

use crate::error::ApiError;
use keel_types::{
    Account, Address, CertifiedCheckpoint, ChainId, Digest, Effect, ExecutionStatus, Nonce, Object,
    Op, PublicKey, Receipt, Signature, SignedTransaction, TimestampMs, Transaction,
};
use serde::{Deserialize, Serialize};

mod admin;
mod status;
pub use admin::*;
pub use status::*;

/// A signed transaction as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionJson {
    /// The network.
    pub chain_id: u64,
    /// The sender's ed25519 public key (64 hex characters).
    pub sender: String,
    /// The sender's next nonce.
    pub nonce: u64,
    /// Milliseconds since the Unix epoch after which the transaction is void.
    pub expiry_ms: u64,
    /// The ops, applied all or none.
    pub ops: Vec<OpJson>,
    /// ed25519 signature (128 hex characters) over the transaction's signing message.
    pub signature: String,
}

/// One op as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpJson {
    /// Move `amount` to `to` (an address, 64 hex characters).
    Transfer {
        /// Recipient address.
        to: String,
        /// Amount.
        amount: u64,
    },
    /// Create or overwrite an object of the sender.
    Put {
        /// Object key (hex).
        key: String,
        /// Value (hex).
        value: String,
    },
    /// Delete an object of the sender.
    Delete {
        /// Object key (hex).
        key: String,
    },
    /// Write only if the object has `expected_version` (0: absent).
    CompareAndSwap {
        /// Object key (hex).
        key: String,
        /// Expected version.
        expected_version: u64,
        /// Value (hex).
        value: String,
    },
    /// A validator's governance vote (validators' nodes make these through the admin API).
    Governance {
        /// The epoch voted in.
        epoch: u64,
        /// The change: hex of its bcs encoding.
        change: String,
        /// What the change does (filled in answers, ignored when submitted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

fn hex_field(value: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(value).map_err(|e| ApiError::bad_request(format!("{field}: not hex: {e}")))
}

fn parse_field<T: std::str::FromStr>(value: &str, field: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

impl TransactionJson {
    /// The transaction it describes (static rules and the signature are checked at admission).
    pub fn to_signed(&self) -> Result<SignedTransaction, ApiError> {
        let sender: PublicKey = parse_field(&self.sender, "sender")?;
        let signature_bytes = hex_field(&self.signature, "signature")?;
        let signature = Signature(signature_bytes.try_into().map_err(|v: Vec<u8>| {
            ApiError::bad_request(format!("signature: {} bytes, expected 64", v.len()))
        })?);
        let ops = self
            .ops
            .iter()
            .enumerate()
            .map(|(i, op)| op.to_op(i))
            .collect::<Result<_, _>>()?;
        Ok(SignedTransaction {
            transaction: Transaction {
                chain_id: ChainId(self.chain_id),
                sender,
                nonce: Nonce(self.nonce),
                expiry: TimestampMs(self.expiry_ms),
                ops,
            },
            signature,
        })
    }

    /// The JSON form of `tx`.
    pub fn from_signed(tx: &SignedTransaction) -> Self {
        let t = &tx.transaction;
        TransactionJson {
            chain_id: t.chain_id.0,
            sender: t.sender.to_string(),
            nonce: t.nonce.0,
            expiry_ms: t.expiry.0,
            ops: t.ops.iter().map(OpJson::from_op).collect(),
            signature: hex::encode(tx.signature.0),
        }
    }
}

impl OpJson {
    fn to_op(&self, i: usize) -> Result<Op, ApiError> {
        let f = |name: &str| format!("ops[{i}].{name}");
        Ok(match self {
            OpJson::Transfer { to, amount } => Op::Transfer {
                to: parse_field::<Address>(to, &f("to"))?,
                amount: *amount,
            },
            OpJson::Put { key, value } => Op::Put {
                key: hex_field(key, &f("key"))?,
                value: hex_field(value, &f("value"))?,
            },
            OpJson::Delete { key } => Op::Delete {
                key: hex_field(key, &f("key"))?,
            },
            OpJson::CompareAndSwap {
                key,
                expected_version,
                value,
            } => Op::CompareAndSwap {
                key: hex_field(key, &f("key"))?,
                expected_version: *expected_version,
                value: hex_field(value, &f("value"))?,
            },
            OpJson::Governance { epoch, change, .. } => Op::Governance {
                epoch: keel_types::Epoch(*epoch),
                change: keel_types::encoding::decode(
                    &hex_field(change, &f("change"))?,
                    keel_types::MAX_TRANSACTION_BYTES,
                    "committee change",
                )
                .map_err(|e| ApiError::bad_request(format!("{}: {e}", f("change"))))?,
            },
        })
    }

    fn from_op(op: &Op) -> Self {
        match op {
            Op::Transfer { to, amount } => OpJson::Transfer {
                to: to.to_string(),
                amount: *amount,
            },
            Op::Put { key, value } => OpJson::Put {
                key: hex::encode(key),
                value: hex::encode(value),
            },
            Op::Delete { key } => OpJson::Delete {
                key: hex::encode(key),
            },
            Op::CompareAndSwap {
                key,
                expected_version,
                value,
            } => OpJson::CompareAndSwap {
                key: hex::encode(key),
                expected_version: *expected_version,
                value: hex::encode(value),
            },
            Op::Governance { epoch, change } => OpJson::Governance {
                epoch: epoch.0,
                change: hex::encode(keel_types::encoding::encode(change)),
                description: Some(change.describe()),
            },
        }
    }
}

/// A receipt as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptJson {
    /// Transaction digest.
    pub digest: String,
    /// Sender address.
    pub sender: String,
    /// Nonce.
    pub nonce: u64,
    /// `success`, `failed` or `discarded`.
    pub status: String,
    /// Why it failed or was discarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// State changes.
    pub effects: Vec<EffectJson>,
    /// Height of the executing block.
    pub height: u64,
    /// Digest of the executing block.
    pub block: String,
    /// Position in the block.
    pub position: u32,
    /// The fee paid (0 when discarded).
    pub fee: u64,
}

/// One state change as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EffectJson {
    /// An account's new balance and nonce.
    Account {
        /// Address.
        address: String,
        /// Balance.
        balance: u64,
        /// Next nonce.
        nonce: u64,
    },
    /// An object written.
    ObjectWritten {
        /// Key (hex).
        key: String,
        /// New version.
        version: u64,
    },
    /// An object deleted.
    ObjectDeleted {
        /// Key (hex).
        key: String,
    },
    /// A governance vote counted.
    GovernanceVote {
        /// The change's digest.
        change: String,
        /// The last height of the epoch, when the change is scheduled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_until: Option<u64>,
    },
}

impl From<&Receipt> for ReceiptJson {
    fn from(r: &Receipt) -> Self {
        let (status, reason) = match &r.status {
            ExecutionStatus::Success => ("success", None),
            ExecutionStatus::Failed(why) => ("failed", Some(why.to_string())),
            ExecutionStatus::Discarded(why) => ("discarded", Some(why.to_string())),
        };
        ReceiptJson {
            digest: r.transaction.to_string(),
            sender: r.sender.to_string(),
            nonce: r.nonce.0,
            fee: r.fee,
            status: status.into(),
            reason,
            effects: r
                .effects
                .iter()
                .map(|e| match e {
                    Effect::Account {
                        address,
                        balance,
                        nonce,
                    } => EffectJson::Account {
                        address: address.to_string(),
                        balance: *balance,
                        nonce: nonce.0,
                    },
                    Effect::ObjectWritten { key, version } => EffectJson::ObjectWritten {
                        key: hex::encode(key),
                        version: *version,
                    },
                    Effect::ObjectDeleted { key } => EffectJson::ObjectDeleted {
                        key: hex::encode(key),
                    },
                    Effect::GovernanceVote {
                        change,
                        scheduled_until,
                    } => EffectJson::GovernanceVote {
                        change: change.to_string(),
                        scheduled_until: scheduled_until.map(|h| h.0),
                    },
                })
                .collect(),
            height: r.height.0,
            block: r.block.to_string(),
            position: r.position,
        }
    }
}

/// Where a transaction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxLookup {
    /// Executed (or discarded) in a committed block.
    Executed(Receipt),
    /// Admitted by this node, not executed yet.
    Pending,
    /// Not known to this node.
    Unknown,
}

/// The answer to a transaction query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionStatusJson {
    /// Transaction digest.
    pub digest: String,
    /// `pending` (admitted, not yet in an executed block), `executed` (its receipt says
    /// `success` or `failed`) or `discarded` (ordered but not executed: expired, or its nonce
    /// out of order; it changed nothing and its receipt says why).
    pub status: String,
    /// The receipt, once its block is executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptJson>,
}

impl From<&Receipt> for TransactionStatusJson {
    fn from(r: &Receipt) -> Self {
        let status = match r.status {
            ExecutionStatus::Discarded(_) => "discarded",
            ExecutionStatus::Success | ExecutionStatus::Failed(_) => "executed",
        };
        TransactionStatusJson {
            digest: r.transaction.to_string(),
            status: status.into(),
            receipt: Some(ReceiptJson::from(r)),
        }
    }
}

/// An account as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountJson {
    /// Address.
    pub address: String,
    /// Balance.
    pub balance: u64,
    /// Next nonce.
    pub nonce: u64,
}

impl AccountJson {
    /// The JSON form of `account` at `address`.
    pub fn new(address: &Address, account: &Account) -> Self {
        AccountJson {
            address: address.to_string(),
            balance: account.balance,
            nonce: account.nonce.0,
        }
    }
}

/// An object as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectJson {
    /// Owner address.
    pub owner: String,
    /// Key (hex).
    pub key: String,
    /// Version.
    pub version: u64,
    /// Value (hex).
    pub value: String,
}

impl ObjectJson {
    /// The JSON form of `object`.
    pub fn new(owner: &Address, key: &[u8], object: &Object) -> Self {
        ObjectJson {
            owner: owner.to_string(),
            key: hex::encode(key),
            version: object.version,
            value: hex::encode(&object.value),
        }
    }
}

/// A batch a block orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRefJson {
    /// Batch digest.
    pub digest: String,
    /// Sealing validator.
    pub author: u32,
    /// Transactions in it.
    pub transactions: u32,
}

/// A committed block as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockJson {
    /// Height.
    pub height: u64,
    /// Digest.
    pub digest: String,
    /// Epoch.
    pub epoch: u64,
    /// Round.
    pub round: u64,
    /// Proposer.
    pub author: u32,
    /// Proposer's timestamp (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Parent block digest.
    pub parent: String,
    /// The batches it orders.
    pub batches: Vec<BatchRefJson>,
    /// Whether this node has executed it.
    pub executed: bool,
    /// The state root after executing it, while this node remembers it (recent heights).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_root: Option<String>,
}

/// A certified checkpoint in short (in the node status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRefJson {
    /// Its sequence.
    pub sequence: u64,
    /// Its digest.
    pub digest: String,
    /// The height it certifies.
    pub height: u64,
    /// The state root at that height.
    pub state_root: String,
}

/// A certified checkpoint as JSON, with its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointJson {
    /// Its sequence (0 is genesis).
    pub sequence: u64,
    /// Its digest (the checkpoint id).
    pub digest: String,
    /// Its epoch.
    pub epoch: u64,
    /// The digest of the previous checkpoint.
    pub previous: String,
    /// The last block it covers.
    pub block: String,
    /// That block's height.
    pub height: u64,
    /// The state root after that block (Merkle root over the 256 bucket checksums).
    pub state_root: String,
    /// Transactions executed since genesis, through that block.
    pub executed_transactions: u64,
    /// Whether it ends its epoch (it then names the next committee).
    pub ends_epoch: bool,
    /// The validators whose signatures certify it.
    pub signers: Vec<u32>,
    /// The bcs encoding of the `CertifiedCheckpoint` (hex), for clients that verify it against
    /// the committee themselves.
    pub certificate: String,
}

impl From<&CertifiedCheckpoint> for CheckpointJson {
    fn from(c: &CertifiedCheckpoint) -> Self {
        let cp = &c.checkpoint;
        CheckpointJson {
            sequence: cp.sequence,
            digest: cp.digest().to_string(),
            epoch: cp.epoch.0,
            previous: cp.previous.to_string(),
            block: cp.last_block.to_string(),
            height: cp.last_height.0,
            state_root: cp.state_root.to_string(),
            executed_transactions: cp.executed_transactions,
            ends_epoch: cp.next_committee.is_some(),
            signers: c.signatures.signers().map(|i| i.0).collect(),
            // An encoding failure would be a bug in keel-types; an empty string says so.
            certificate: bcs::to_bytes(c).map(hex::encode).unwrap_or_default(),
        }
    }
}

impl From<&CertifiedCheckpoint> for CheckpointRefJson {
    fn from(c: &CertifiedCheckpoint) -> Self {
        CheckpointRefJson {
            sequence: c.checkpoint.sequence,
            digest: c.checkpoint.digest().to_string(),
            height: c.checkpoint.last_height.0,
            state_root: c.checkpoint.state_root.to_string(),
        }
    }
}

/// The result of submitting one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResultJson {
    /// The digest, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The error, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorJson>,
}

/// The answer to a batch submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSubmitJson {
    /// How many were accepted.
    pub accepted: usize,
    /// One result per transaction, in order.
    pub results: Vec<SubmitResultJson>,
}

/// A committed transaction on the event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedJson {
    /// Transaction digest.
    pub digest: String,
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub position: u32,
    /// `success`, `failed` or `discarded`.
    pub status: String,
}

impl From<&Receipt> for CommittedJson {
    fn from(r: &Receipt) -> Self {
        CommittedJson {
            digest: r.transaction.to_string(),
            height: r.height.0,
            position: r.position,
            status: match r.status {
                ExecutionStatus::Success => "success",
                ExecutionStatus::Failed(_) => "failed",
                ExecutionStatus::Discarded(_) => "discarded",
            }
            .into(),
        }
    }
}

/// Parses a digest path segment.
pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    parse_field(s, "digest")
}

#[cfg(test)]
mod tests;
