//! The committee: validators with stake, and the quorum arithmetic every certificate uses.
//!
//! A *quorum* is a set of signers whose stake is more than 2/3 of the total; a *validity* set
//! has more than 1/3. With at most f < n/3 faulty stake, any two quorums intersect in more than
//! 1/3 of the stake, hence in at least one honest validator, and any validity set contains one.
//! Arithmetic is done in `u128`, so no stake distribution can overflow it.

use crate::{
    crypto::PublicKey,
    error::{Error, Result},
    ids::{Epoch, Stake, ValidatorIndex},
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Most validators a committee may hold (bounds certificate sizes).
pub const MAX_COMMITTEE_SIZE: usize = 1024;

/// One member of the committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// Key that signs blocks, votes, timeouts, acknowledgements and checkpoints.
    pub protocol_key: PublicKey,
    /// Key that authenticates the validator's QUIC endpoint.
    pub network_key: PublicKey,
    /// Voting power.
    pub stake: Stake,
    /// Network address (`host:port`) peers dial.
    pub address: String,
}

/// The validator set of one epoch, in a fixed order (the index is the position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    epoch: Epoch,
    validators: Vec<ValidatorInfo>,
    total_stake: u64,
}

impl Committee {
    /// Builds a committee, checking it is non-empty, within size, with positive stakes that do
    /// not overflow and with distinct protocol and network keys.
    pub fn new(epoch: Epoch, validators: Vec<ValidatorInfo>) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidCommittee { reason };
        if validators.is_empty() {
            return Err(invalid("no validators".into()));
        }
        if validators.len() > MAX_COMMITTEE_SIZE {
            return Err(invalid(format!(
                "{} validators, over the limit of {MAX_COMMITTEE_SIZE}",
                validators.len()
            )));
        }
        let mut total: u64 = 0;
        let mut protocol_keys = HashSet::new();
        let mut network_keys = HashSet::new();
        for (i, v) in validators.iter().enumerate() {
            if v.stake.0 == 0 {
                return Err(invalid(format!("validators[{i}].stake is zero")));
            }
            total = total
                .checked_add(v.stake.0)
                .ok_or_else(|| invalid("total stake overflows u64".into()))?;
            if !protocol_keys.insert(v.protocol_key) {
                return Err(invalid(format!(
                    "validators[{i}].protocol_key {} appears twice",
                    v.protocol_key
                )));
            }
            if !network_keys.insert(v.network_key) {
                return Err(invalid(format!(
                    "validators[{i}].network_key {} appears twice",
                    v.network_key
                )));
            }
        }
        Ok(Committee {
            epoch,
            validators,
            total_stake: total,
        })
    }

    /// The epoch this committee serves.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Number of validators.
    pub fn size(&self) -> usize {
        self.validators.len()
    }

    /// The members' indices, in order.
    pub fn indices(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        (0..self.validators.len()).filter_map(|i| u32::try_from(i).ok().map(ValidatorIndex))
    }

    /// The validators in index order.
    pub fn validators(&self) -> &[ValidatorInfo] {
        &self.validators
    }

    /// Sum of all stakes.
    pub fn total_stake(&self) -> u64 {
        self.total_stake
    }

    /// The validator at `index`, if any.
    pub fn validator(&self, index: ValidatorIndex) -> Option<&ValidatorInfo> {
        self.validators.get(index.as_usize())
    }

    /// The validator at `index`, or an [`Error::UnknownSigner`].
    pub fn member(&self, index: ValidatorIndex) -> Result<&ValidatorInfo> {
        self.validator(index).ok_or(Error::UnknownSigner {
            index,
            size: self.validators.len(),
        })
    }

    /// The stake of `index` (zero for unknown indices).
    pub fn stake(&self, index: ValidatorIndex) -> u64 {
        self.validator(index).map_or(0, |v| v.stake.0)
    }

    /// The index whose protocol key is `key`.
    pub fn index_of(&self, key: &PublicKey) -> Option<ValidatorIndex> {
        self.validators
            .iter()
            .position(|v| &v.protocol_key == key)
            .and_then(|i| u32::try_from(i).ok())
            .map(ValidatorIndex)
    }

    /// Whether `stake` is more than 2/3 of the total.
    pub fn is_quorum(&self, stake: u64) -> bool {
        3 * u128::from(stake) > 2 * u128::from(self.total_stake)
    }

    /// Whether `stake` is more than 1/3 of the total.
    pub fn is_validity(&self, stake: u64) -> bool {
        3 * u128::from(stake) > u128::from(self.total_stake)
    }

    /// The least stake that forms a quorum.
    pub fn quorum_threshold(&self) -> u64 {
        // Smallest s with 3s > 2T is floor(2T/3) + 1.
        let t = u128::from(self.total_stake);
        u64::try_from(2 * t / 3 + 1).unwrap_or(u64::MAX)
    }

    /// The least stake that forms a validity set.
    pub fn validity_threshold(&self) -> u64 {
        let t = u128::from(self.total_stake);
        u64::try_from(t / 3 + 1).unwrap_or(u64::MAX)
    }
}
