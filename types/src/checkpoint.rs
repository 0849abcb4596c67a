//! Checkpoints: signed summaries of executed state that lagging and new nodes recover from.

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
