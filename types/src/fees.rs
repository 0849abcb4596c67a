//! Transaction fees: what a transaction pays from its sender's balance, set in genesis.
//!
//! A transaction's fee is fixed by its content before it runs: per operation, plus per byte
//! of state each operation stores (an object's key and value). Governance votes are free (the
//! committee's own business; their number is bounded by the open-vote limit). The executor
//! charges the fee before the operations run, and keeps it when they fail; a sender whose
//! balance cannot cover it has the transaction discarded, consuming nothing. Fees are burned.

use crate::transaction::{Op, Transaction};
use serde::{Deserialize, Serialize};

/// The fee parameters of a chain (part of genesis, and of the executed state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSchedule {
    /// Paid for each operation (governance votes excepted).
    pub per_op: u64,
    /// Paid for each byte of state an operation stores (key and value of a put or
    /// compare-and-swap).
    pub per_byte: u64,
}

impl FeeSchedule {
    /// The fee of one operation.
    pub fn op_fee(&self, op: &Op) -> u64 {
        let stored = match op {
            Op::Governance { .. } => return 0,
            Op::Transfer { .. } | Op::Delete { .. } => 0,
            Op::Put { key, value } | Op::CompareAndSwap { key, value, .. } => {
                key.len().saturating_add(value.len())
            }
        };
        self.per_op
            .saturating_add(self.per_byte.saturating_mul(stored as u64))
    }

    /// The fee of `tx` (saturating at `u64::MAX`, which no balance covers).
    pub fn fee(&self, tx: &Transaction) -> u64 {
        tx.ops
            .iter()
            .fold(0u64, |sum, op| sum.saturating_add(self.op_fee(op)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Address, ChainId, Epoch, KeyPair, Nonce, TimestampMs, governance::CommitteeChange,
    };

    #[test]
    fn a_fee_is_per_op_plus_per_stored_byte_and_votes_are_free() {
        let schedule = FeeSchedule {
            per_op: 10,
            per_byte: 2,
        };
        let key = KeyPair::from_seed(&[1; 32]);
        let tx = Transaction {
            chain_id: ChainId(1),
            sender: key.public(),
            nonce: Nonce(0),
            expiry: TimestampMs(1),
            ops: vec![
                Op::Transfer {
                    to: Address::from_public_key(&KeyPair::from_seed(&[2; 32]).public()),
                    amount: 5,
                },
                Op::Put {
                    key: b"key".to_vec(),
                    value: vec![0; 7],
                },
                Op::Delete { key: b"k".to_vec() },
            ],
        };
        // 10 (transfer) + 10 + 2 × 10 (put) + 10 (delete).
        assert_eq!(schedule.fee(&tx), 50);
        let vote = Transaction {
            ops: vec![Op::Governance {
                epoch: Epoch(1),
                change: CommitteeChange::Remove {
                    protocol_key: key.public(),
                },
            }],
            ..tx.clone()
        };
        assert_eq!(schedule.fee(&vote), 0);
        assert_eq!(FeeSchedule::default().fee(&tx), 0);
        let huge = FeeSchedule {
            per_op: u64::MAX,
            per_byte: 1,
        };
        assert_eq!(huge.fee(&tx), u64::MAX);
    }
}
