//! Governance: committee changes that validators vote for with system transactions, and the
//! epoch state that records them.
//!
//! A vote is an [`crate::Op::Governance`] op in a transaction whose sender is a validator's
//! protocol key (the transaction signature is the vote's signature). The rules that count votes,
//! schedule changes and end epochs are execution semantics and live in `keel-authority`; this
//! module holds the data and the checks a change can make about itself:
//! - an added validator proves it holds both its keys ([`PossessionProof`]: each key signs the
//!   pair under [`Domain::Governance`] with the chain id bound in), so nobody can register
//!   another's key;
//! - stakes are positive; addresses are dialable `IP:PORT` or `HOST:PORT` in one canonical
//!   spelling, of bounded length ([`check_address`]).
//!
//! The [`EpochState`] lives in the executed state (under a reserved key), so it is covered by
//! the state root, certified by checkpoints and carried by state sync like any account.

use crate::{
    committee::{Committee, ValidatorInfo},
    crypto::{Domain, KeyPair, PublicKey, Signature, signing_message},
    digest::Digest,
    error::{Error, Result},
    ids::{ChainId, Epoch, Height, Stake, ValidatorIndex},
};
use serde::{Deserialize, Serialize};

pub use crate::address::{MAX_ADDRESS_LEN, check_address};

/// Changes waiting for votes that one validator may have voted for at a time (bounds the
/// pending list at committee size × this).
pub const MAX_OPEN_VOTES_PER_VALIDATOR: usize = 8;

/// Proof that whoever registers a validator holds both its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PossessionProof {
    /// The protocol key's signature over the key pair.
    pub protocol: Signature,
    /// The network key's signature over the key pair.
    pub network: Signature,
}

#[derive(Serialize)]
struct KeyPairStatement<'a> {
    tag: &'static str,
    protocol_key: &'a PublicKey,
    network_key: &'a PublicKey,
}

fn possession_message(
    chain_id: ChainId,
    protocol_key: &PublicKey,
    network_key: &PublicKey,
) -> [u8; 32] {
    let statement = KeyPairStatement {
        tag: "keel/possession",
        protocol_key,
        network_key,
    };
    // Epoch 0: a proof stays valid across epochs (the keys it binds do not change).
    signing_message(Domain::Governance, Epoch(0), chain_id, &statement)
}

impl PossessionProof {
    /// Signs the pair with both keys.
    pub fn create(protocol: &KeyPair, network: &KeyPair, chain_id: ChainId) -> Self {
        let message = possession_message(chain_id, &protocol.public(), &network.public());
        PossessionProof {
            protocol: protocol.sign_message(&message),
            network: network.sign_message(&message),
        }
    }

    /// Checks both signatures over the pair.
    pub fn verify(
        &self,
        chain_id: ChainId,
        protocol_key: &PublicKey,
        network_key: &PublicKey,
    ) -> Result<()> {
        let message = possession_message(chain_id, protocol_key, network_key);
        protocol_key.verify_message(
            &message,
            &self.protocol,
            "proof of possession (protocol key)",
        )?;
        network_key.verify_message(&message, &self.network, "proof of possession (network key)")
    }
}

/// A change to the committee, effective from the next epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitteeChange {
    /// Adds a validator.
    Add {
        /// Its keys, stake and address.
        validator: ValidatorInfo,
        /// That it holds both keys.
        proof: PossessionProof,
    },
    /// Removes the validator with this protocol key.
    Remove {
        /// The validator's current protocol key.
        protocol_key: PublicKey,
    },
    /// Sets a validator's stake.
    SetStake {
        /// The validator's current protocol key.
        protocol_key: PublicKey,
        /// Positive.
        stake: Stake,
    },
    /// Replaces a validator's own keys (voted by that validator alone).
    RotateKeys {
        /// The validator's current protocol key.
        protocol_key: PublicKey,
        /// Its protocol key from the next epoch (may equal the current one).
        new_protocol_key: PublicKey,
        /// Its network key from the next epoch (may equal the current one).
        new_network_key: PublicKey,
        /// That it holds both new keys.
        proof: PossessionProof,
    },
}

impl CommitteeChange {
    /// The change's id: votes for equal changes count together.
    pub fn digest(&self) -> Digest {
        Digest::of_tagged("keel/committee-change", self)
    }

    /// The protocol key of the validator the change is about.
    pub fn subject(&self) -> PublicKey {
        match self {
            CommitteeChange::Add { validator, .. } => validator.protocol_key,
            CommitteeChange::Remove { protocol_key }
            | CommitteeChange::SetStake { protocol_key, .. }
            | CommitteeChange::RotateKeys { protocol_key, .. } => *protocol_key,
        }
    }

    /// A short human description for logs and the admin API.
    pub fn describe(&self) -> String {
        match self {
            CommitteeChange::Add { validator, .. } => format!(
                "add validator {} at {} with stake {}",
                validator.protocol_key, validator.address, validator.stake
            ),
            CommitteeChange::Remove { protocol_key } => {
                format!("remove validator {protocol_key}")
            }
            CommitteeChange::SetStake {
                protocol_key,
                stake,
            } => format!("set the stake of validator {protocol_key} to {stake}"),
            CommitteeChange::RotateKeys {
                protocol_key,
                new_protocol_key,
                new_network_key,
                ..
            } => format!(
                "rotate the keys of validator {protocol_key} to protocol key {new_protocol_key}, network key {new_network_key}"
            ),
        }
    }

    /// What the change can check about itself: positive stake, a valid address, the proofs of
    /// possession. `field` names the change in messages (e.g. `ops[0].change`).
    pub fn validate(&self, chain_id: ChainId, field: &str) -> Result<()> {
        let invalid = |sub: &str, reason: String| Error::InvalidField {
            field: format!("{field}.{sub}"),
            reason,
        };
        match self {
            CommitteeChange::Add { validator, proof } => {
                if validator.stake.0 == 0 {
                    return Err(invalid("validator.stake", "stake must be positive".into()));
                }
                check_address(&validator.address)
                    .map_err(|reason| invalid("validator.address", reason))?;
                proof
                    .verify(chain_id, &validator.protocol_key, &validator.network_key)
                    .map_err(|e| invalid("proof", e.to_string()))
            }
            CommitteeChange::Remove { .. } => Ok(()),
            CommitteeChange::SetStake { stake, .. } => {
                if stake.0 == 0 {
                    return Err(invalid(
                        "stake",
                        "stake must be positive (remove the validator instead)".into(),
                    ));
                }
                Ok(())
            }
            CommitteeChange::RotateKeys {
                new_protocol_key,
                new_network_key,
                proof,
                ..
            } => {
                // A new key may equal the current one (rotating only the other key).
                proof
                    .verify(chain_id, new_protocol_key, new_network_key)
                    .map_err(|e| invalid("proof", e.to_string()))
            }
        }
    }
}

/// Epoch parameters fixed in genesis (they are execution rules: every validator must agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpochParams {
    /// Blocks between the commit that schedules a change and the end of the epoch (so
    /// consensus learns the boundary before it reaches it).
    pub change_delay_blocks: u64,
    /// An epoch ends after this many blocks even without changes (0: no limit).
    pub max_length_blocks: u64,
}

/// Default [`EpochParams::change_delay_blocks`].
pub const DEFAULT_CHANGE_DELAY_BLOCKS: u64 = 20;

impl Default for EpochParams {
    fn default() -> Self {
        EpochParams {
            change_delay_blocks: DEFAULT_CHANGE_DELAY_BLOCKS,
            max_length_blocks: 0,
        }
    }
}

/// A change waiting for votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// [`CommitteeChange::digest`].
    pub digest: Digest,
    /// The change.
    pub change: CommitteeChange,
    /// Committee members that voted for it, ascending.
    pub voters: Vec<ValidatorIndex>,
}

/// A change with a quorum of votes, applied at the end of the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    /// [`CommitteeChange::digest`].
    pub digest: Digest,
    /// The change.
    pub change: CommitteeChange,
    /// The height of the block whose execution scheduled it.
    pub scheduled_at: Height,
}

/// The governance record of the current epoch, kept in the executed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochState {
    /// The committee of the current epoch (its epoch is the current epoch).
    pub committee: Committee,
    /// The last height of the previous epoch (0 for the first epoch): this epoch's blocks
    /// start above it.
    pub started_after: Height,
    /// The parameters from genesis.
    pub params: EpochParams,
    /// Changes waiting for votes, in order of first vote.
    pub pending: Vec<PendingChange>,
    /// Changes with a quorum, in the order they reached it.
    pub scheduled: Vec<ScheduledChange>,
    /// The last height of this epoch, once known.
    pub ends_at: Option<Height>,
}

impl EpochState {
    /// The first epoch's record.
    pub fn genesis(committee: Committee, params: EpochParams) -> Self {
        EpochState {
            committee,
            started_after: Height(0),
            params,
            pending: Vec::new(),
            scheduled: Vec::new(),
            ends_at: None,
        }
    }

    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.committee.epoch()
    }

    /// Whether the epoch ends with the block at `height`: the scheduled end, or the epoch
    /// length limit.
    pub fn ends_with(&self, height: Height) -> bool {
        if self.ends_at == Some(height) {
            return true;
        }
        let limit = self.params.max_length_blocks;
        limit > 0 && height.0 >= self.started_after.0.saturating_add(limit)
    }

    /// The validators of the next epoch: the current ones with the scheduled changes applied
    /// in order. Changes that no longer apply (their subject gone) are skipped; the result
    /// may be invalid (empty), which the caller checks with [`Committee::new`].
    pub fn next_validators(&self) -> Vec<ValidatorInfo> {
        let mut validators = self.committee.validators().to_vec();
        for scheduled in &self.scheduled {
            apply_change(&mut validators, &scheduled.change);
        }
        validators
    }

    /// The committee of the next epoch (scheduled changes applied), or the current validators
    /// again if the changes would make an invalid committee (they are checked before they are
    /// scheduled, so this does not happen).
    pub fn next_committee(&self) -> Committee {
        let next = Epoch(self.epoch().0.saturating_add(1));
        Committee::new(next, self.next_validators()).unwrap_or_else(|_| {
            Committee::new(next, self.committee.validators().to_vec())
                .unwrap_or_else(|_| self.committee.clone())
        })
    }
}

/// Applies one change to an ordered validator list (no checks; see the authority's rules).
pub fn apply_change(validators: &mut Vec<ValidatorInfo>, change: &CommitteeChange) {
    let position = |validators: &[ValidatorInfo], key: &PublicKey| {
        validators.iter().position(|v| &v.protocol_key == key)
    };
    match change {
        CommitteeChange::Add { validator, .. } => validators.push(validator.clone()),
        CommitteeChange::Remove { protocol_key } => {
            if let Some(i) = position(validators, protocol_key) {
                validators.remove(i);
            }
        }
        CommitteeChange::SetStake {
            protocol_key,
            stake,
        } => {
            if let Some(i) = position(validators, protocol_key) {
                validators[i].stake = *stake;
            }
        }
        CommitteeChange::RotateKeys {
            protocol_key,
            new_protocol_key,
            new_network_key,
            ..
        } => {
            if let Some(i) = position(validators, protocol_key) {
                validators[i].protocol_key = *new_protocol_key;
                validators[i].network_key = *new_network_key;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::committee;

    const CHAIN: ChainId = ChainId(3);

    fn added(seed: u8) -> (CommitteeChange, KeyPair, KeyPair) {
        let protocol = KeyPair::from_seed(&[seed; 32]);
        let network = KeyPair::from_seed(&[seed.wrapping_add(100); 32]);
        let change = CommitteeChange::Add {
            validator: ValidatorInfo {
                protocol_key: protocol.public(),
                network_key: network.public(),
                stake: Stake(5),
                address: "127.0.0.1:7000".into(),
            },
            proof: PossessionProof::create(&protocol, &network, CHAIN),
        };
        (change, protocol, network)
    }

    #[test]
    fn a_possession_proof_binds_both_keys_and_the_chain() {
        let (change, _, network) = added(1);
        assert_eq!(change.validate(CHAIN, "change"), Ok(()));
        assert!(
            change.validate(ChainId(4), "change").is_err(),
            "another chain"
        );
        let CommitteeChange::Add { validator, proof } = change.clone() else {
            unreachable!()
        };
        // Someone else's protocol key with the attacker's own network key.
        let other = KeyPair::from_seed(&[9; 32]);
        let stolen = CommitteeChange::Add {
            validator: ValidatorInfo {
                protocol_key: other.public(),
                ..validator.clone()
            },
            proof: proof.clone(),
        };
        let err = stolen.validate(CHAIN, "ops[0].change").unwrap_err();
        assert!(err.to_string().contains("ops[0].change.proof"), "{err}");
        // A proof made with only the network key (protocol signature copied from it).
        let forged = PossessionProof {
            protocol: proof.network,
            network: proof.network,
        };
        let _ = network;
        assert!(
            CommitteeChange::Add {
                validator,
                proof: forged
            }
            .validate(CHAIN, "change")
            .is_err()
        );
    }

    #[test]
    fn static_checks_name_the_field() {
        let (change, ..) = added(2);
        let CommitteeChange::Add {
            mut validator,
            proof,
        } = change
        else {
            unreachable!()
        };
        validator.stake = Stake(0);
        let err = CommitteeChange::Add {
            validator: validator.clone(),
            proof: proof.clone(),
        }
        .validate(CHAIN, "c")
        .unwrap_err();
        assert!(err.to_string().contains("c.validator.stake"), "{err}");
        validator.stake = Stake(1);
        for (bad, says) in [
            ("no-port", "not HOST:PORT"),
            ("keel_4:7000", "label `keel_4`"),
            ("keel-4:0", "port `0`"),
            ("10.0.0.300:7000", "not a valid IP address"),
            ("10.0.0.3:0", "port 0"),
            ("[fe80::1%2]:7000", "scope id"),
            ("0.0.0.0:7000", "cannot be dialled"),
            ("[::]:7000", "cannot be dialled"),
            ("224.0.0.1:7000", "cannot be dialled"),
            ("[::0001]:7000", "write it as `[::1]:7000`"),
            ("Keel-4:7000", "lowercase"),
            ("keel-4.:7000", "trailing dot"),
            ("keel-4:+7000", "port `+7000`"),
            ("keel-4:07000", "port `07000`"),
            ("0x7f000001:7000", "not a valid IP address"),
        ] {
            validator.address = bad.into();
            let err = CommitteeChange::Add {
                validator: validator.clone(),
                proof: proof.clone(),
            }
            .validate(CHAIN, "c")
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("c.validator.address") && err.contains(says),
                "{err}"
            );
        }
        for good in ["keel-4.example.net:7000", "10.0.0.3:7000", "[::1]:7000"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        let zero = CommitteeChange::SetStake {
            protocol_key: KeyPair::from_seed(&[1; 32]).public(),
            stake: Stake(0),
        };
        assert!(zero.validate(CHAIN, "c").is_err());
    }

    #[test]
    fn scheduled_changes_apply_in_order() {
        let (c, _) = committee(4);
        let mut state = EpochState::genesis(c.clone(), EpochParams::default());
        let (add, ..) = added(7);
        let schedule = |change: CommitteeChange| ScheduledChange {
            digest: change.digest(),
            change,
            scheduled_at: Height(3),
        };
        state.scheduled.push(schedule(add.clone()));
        state.scheduled.push(schedule(CommitteeChange::Remove {
            protocol_key: c.validators()[1].protocol_key,
        }));
        state.scheduled.push(schedule(CommitteeChange::SetStake {
            protocol_key: c.validators()[0].protocol_key,
            stake: Stake(9),
        }));
        let next = state.next_committee();
        assert_eq!(next.epoch(), Epoch(c.epoch().0 + 1));
        assert_eq!(next.size(), 4);
        assert_eq!(next.validators()[0].stake, Stake(9));
        assert_eq!(next.validators()[1], c.validators()[2]);
        assert_eq!(next.validators()[3].protocol_key, add.subject());
    }

    #[test]
    fn the_length_limit_ends_an_epoch_without_changes() {
        let (c, _) = committee(1);
        let mut state = EpochState::genesis(
            c,
            EpochParams {
                change_delay_blocks: 5,
                max_length_blocks: 100,
            },
        );
        state.started_after = Height(50);
        assert!(!state.ends_with(Height(149)));
        assert!(state.ends_with(Height(150)));
        state.params.max_length_blocks = 0;
        assert!(!state.ends_with(Height(1_000_000)));
        state.ends_at = Some(Height(60));
        assert!(state.ends_with(Height(60)));
    }
}
