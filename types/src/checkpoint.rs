//! Checkpoints: signed summaries of executed state that lagging and new nodes recover from.
//!
//! A [`Checkpoint`] names the state after a block: its height and id, the state root (the
//! Merkle root over the bucket checksums, see [`crate::state_proof`]), the executed
//! transaction count and the digest of the previous checkpoint, so checkpoints form a hash
//! chain back to the genesis checkpoint (sequence 0, previous = [`Digest::ZERO`]).
//! Validators sign it with their protocol key under [`Domain::Checkpoint`]
//! ([`CheckpointSignature`]); signatures over more than 2/3 of the stake make a
//! [`CertifiedCheckpoint`].
//!
//! Invariants: a signature verifies only for the checkpoint's own epoch and the chain's id; a
//! certificate only with distinct, ascending committee members over the quorum threshold.

use crate::{
    batch::check_epoch,
    committee::Committee,
    crypto::{Domain, KeyPair, Signature, signing_message},
    digest::Digest,
    error::Result,
    ids::{ChainId, Epoch, Height, ValidatorIndex},
    multisig::{MultiSignature, Threshold},
};
use serde::{Deserialize, Serialize};

/// The state after executing through a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The epoch the checkpoint belongs to.
    pub epoch: Epoch,
    /// Checkpoint counter (0 is the genesis state).
    pub sequence: u64,
    /// The digest of checkpoint `sequence - 1` ([`Digest::ZERO`] for the genesis checkpoint).
    pub previous: Digest,
    /// The last executed block.
    pub last_block: Digest,
    /// Its height.
    pub last_height: Height,
    /// The state root after executing it.
    pub state_root: Digest,
    /// Transactions executed since genesis.
    pub executed_transactions: u64,
    /// The committee of the next epoch, when this checkpoint ends the epoch.
    pub next_committee: Option<Committee>,
}

impl Checkpoint {
    /// The genesis checkpoint: sequence 0, the genesis block at height 0 and the genesis
    /// state's root, no predecessor.
    pub fn genesis(epoch: Epoch, genesis_block: Digest, state_root: Digest) -> Self {
        Checkpoint {
            epoch,
            sequence: 0,
            previous: Digest::ZERO,
            last_block: genesis_block,
            last_height: Height(0),
            state_root,
            executed_transactions: 0,
            next_committee: None,
        }
    }

    /// The checkpoint id.
    pub fn digest(&self) -> Digest {
        Digest::of_tagged("keel/checkpoint", self)
    }

    fn message(&self, chain_id: ChainId) -> [u8; 32] {
        signing_message(Domain::Checkpoint, self.epoch, chain_id, self)
    }

    /// One validator's signature over this checkpoint.
    pub fn sign(&self, key: &KeyPair, chain_id: ChainId) -> Signature {
        key.sign_message(&self.message(chain_id))
    }

    /// Verifies one validator's signature over this checkpoint.
    pub fn verify_signature(
        &self,
        committee: &Committee,
        chain_id: ChainId,
        signer: ValidatorIndex,
        signature: &Signature,
    ) -> Result<()> {
        check_epoch(committee, self.epoch)?;
        committee.member(signer)?.protocol_key.verify_message(
            &self.message(chain_id),
            signature,
            "checkpoint",
        )
    }
}

/// A checkpoint signed by more than 2/3 of its epoch's stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signatures.
    pub signatures: MultiSignature,
}

impl CertifiedCheckpoint {
    /// Verifies the epoch, signers' stake and signatures.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        check_epoch(committee, self.checkpoint.epoch)?;
        self.signatures.verify(
            committee,
            Threshold::Quorum,
            &self.checkpoint.message(chain_id),
            "certified checkpoint",
        )
    }
}

/// One validator's signature over a checkpoint, as gossiped between validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSignature {
    /// The checkpoint signed.
    pub checkpoint: Checkpoint,
    /// The signer.
    pub signer: ValidatorIndex,
    /// Its signature over the checkpoint.
    pub signature: Signature,
}

impl CheckpointSignature {
    /// Signs `checkpoint` as validator `signer`.
    pub fn new(
        checkpoint: Checkpoint,
        signer: ValidatorIndex,
        key: &KeyPair,
        chain_id: ChainId,
    ) -> Self {
        let signature = checkpoint.sign(key, chain_id);
        CheckpointSignature {
            checkpoint,
            signer,
            signature,
        }
    }

    /// Verifies the epoch, the signer's membership and the signature.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        self.checkpoint
            .verify_signature(committee, chain_id, self.signer, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::Error, test_utils::committee};

    const CHAIN: ChainId = ChainId(7);

    fn checkpoint(epoch: Epoch, sequence: u64) -> Checkpoint {
        Checkpoint {
            sequence,
            last_height: Height(sequence * 10),
            previous: Digest::of_bytes(b"previous"),
            ..Checkpoint::genesis(epoch, Digest::of_bytes(b"g"), Digest::of_bytes(b"root"))
        }
    }

    #[test]
    fn signatures_verify_for_their_signer_epoch_and_chain_only() {
        let (c, keys) = committee(4);
        let cp = checkpoint(c.epoch(), 1);
        let s = CheckpointSignature::new(cp.clone(), ValidatorIndex(1), &keys[1], CHAIN);
        assert_eq!(s.verify(&c, CHAIN), Ok(()));
        assert!(s.verify(&c, ChainId(8)).is_err(), "another chain");
        let mut other = s.clone();
        other.signer = ValidatorIndex(2);
        assert!(
            other.verify(&c, CHAIN).is_err(),
            "claimed by another member"
        );
        other.signer = ValidatorIndex(9);
        assert!(matches!(
            other.verify(&c, CHAIN),
            Err(Error::UnknownSigner { .. })
        ));
        let mut changed = s.clone();
        changed.checkpoint.state_root = Digest::of_bytes(b"other root");
        assert!(changed.verify(&c, CHAIN).is_err(), "another root");
        let mut epoch = s;
        epoch.checkpoint.epoch = Epoch(c.epoch().0 + 1);
        assert!(epoch.verify(&c, CHAIN).is_err(), "another epoch");
    }

    #[test]
    fn a_certificate_needs_more_than_two_thirds_of_the_stake() {
        let (c, keys) = committee(4);
        let cp = checkpoint(c.epoch(), 3);
        let sigs = |n: u32| {
            MultiSignature::from_signatures(
                (0..n)
                    .map(|i| (ValidatorIndex(i), cp.sign(&keys[i as usize], CHAIN)))
                    .collect(),
            )
        };
        let certified = |signatures| CertifiedCheckpoint {
            checkpoint: cp.clone(),
            signatures,
        };
        assert_eq!(certified(sigs(3)).verify(&c, CHAIN), Ok(()));
        assert!(matches!(
            certified(sigs(2)).verify(&c, CHAIN),
            Err(Error::InsufficientStake { .. })
        ));
        let mut forged = sigs(3);
        forged.signatures_mut()[2].1 = cp.sign(&keys[3], CHAIN);
        assert!(certified(forged).verify(&c, CHAIN).is_err());
    }

    #[test]
    fn the_previous_digest_is_part_of_the_id() {
        let a = checkpoint(Epoch(0), 1);
        let mut b = a.clone();
        b.previous = Digest::ZERO;
        assert_ne!(a.digest(), b.digest());
        assert_eq!(
            Checkpoint::genesis(Epoch(0), a.last_block, a.state_root).previous,
            Digest::ZERO
        );
    }
}
