//! Consensus messages: blocks and votes. The certificates blocks carry (QCs, timeouts, TCs)
//! are in [`crate::certificates`], re-exported here.
//!
//! Everything here is verified against a [`Committee`] before use: the epoch matches, signers are
//! members, signatures are valid in their own domain, and certificates carry more than 2/3 of the
//! stake.

use crate::{
    batch::{ProofOfAvailability, check_epoch},
    committee::Committee,
    crypto::{Domain, KeyPair, Signature, SignedMessage, signing_message, verify_batch},
    digest::Digest,
    error::{Error, Result},
    ids::{ChainId, Epoch, Round, TimestampMs, ValidatorIndex},
    multisig::Threshold,
};
use serde::{Deserialize, Serialize};

pub use crate::certificates::{
    CertificateVerifier, QuorumCertificate, Timeout, TimeoutCertificate, TimeoutData, Uncached,
    VoteData, genesis_digest,
};

/// Most proofs of availability in one block.
pub const MAX_BLOCK_PAYLOAD: usize = 1_000;

/// Most failed leaders one block records ([`Block::failed_leaders`]): the leaders of the last
/// this-many rounds it skips.
pub const MAX_FAILED_LEADERS: usize = 32;

/// The rounds strictly between `parent` and `round` whose leaders a block at `round` on a
/// parent at `parent` records: the last [`MAX_FAILED_LEADERS`] of them, oldest first.
pub fn skipped_rounds(parent: Round, round: Round) -> impl Iterator<Item = Round> {
    let end = round.0;
    let start = parent
        .0
        .saturating_add(1)
        .max(end.saturating_sub(MAX_FAILED_LEADERS as u64));
    (start..end).map(Round)
}

/// A validator's vote for a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The block voted for.
    pub data: VoteData,
    /// The voter.
    pub author: ValidatorIndex,
    /// Its signature in [`Domain::Vote`].
    pub signature: Signature,
}

impl Vote {
    /// Signs a vote for `data`.
    pub fn new(data: VoteData, author: ValidatorIndex, key: &KeyPair, chain_id: ChainId) -> Self {
        Vote {
            data,
            author,
            signature: key.sign_message(&data.message(chain_id)),
        }
    }

    /// Verifies the voter and signature.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        check_epoch(committee, self.data.epoch)?;
        committee.member(self.author)?.protocol_key.verify_message(
            &self.data.message(chain_id),
            &self.signature,
            "vote",
        )
    }
}

/// The signed-over content of a block proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The epoch.
    pub epoch: Epoch,
    /// The round; greater than the parent QC's round.
    pub round: Round,
    /// The proposer.
    pub author: ValidatorIndex,
    /// The certificate of the parent block.
    pub parent_qc: QuorumCertificate,
    /// Present when the previous round ended in a timeout rather than a QC.
    pub timeout_cert: Option<TimeoutCertificate>,
    /// The leaders of the rounds this block skips (those between its parent QC's round and
    /// its own), oldest first: one entry per skipped round, for all of them or the last
    /// [`MAX_FAILED_LEADERS`]; `None` where the proposer's committed history does not decide
    /// that round's leader yet. Verification checks the count and the indices; voters whose
    /// history decides a round check the leader named for it, so committed blocks record who
    /// failed for leader reputation.
    pub failed_leaders: Vec<Option<ValidatorIndex>>,
    /// Batches ordered by this block.
    pub payload: Vec<ProofOfAvailability>,
    /// The proposer's clock.
    pub timestamp: TimestampMs,
}

impl Block {
    /// The block id.
    pub fn digest(&self) -> Digest {
        Digest::of_tagged("keel/block", self)
    }

    /// The parent's digest.
    pub fn parent(&self) -> Digest {
        self.parent_qc.block()
    }

    /// The rounds whose leaders [`Block::failed_leaders`] names, oldest first: the last
    /// [`MAX_FAILED_LEADERS`] rounds between the parent QC's round and this block's round.
    pub fn skipped_rounds(&self) -> impl Iterator<Item = Round> + use<> {
        skipped_rounds(self.parent_qc.round(), self.round)
    }

    /// Signs the block as its author.
    pub fn sign(self, key: &KeyPair, chain_id: ChainId) -> SignedBlock {
        let signature = key.sign(Domain::Block, self.epoch, chain_id, &self);
        SignedBlock {
            block: self,
            signature,
        }
    }
}

/// A block with its author's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBlock {
    /// The block.
    pub block: Block,
    /// The author's signature in [`Domain::Block`].
    pub signature: Signature,
}

impl SignedBlock {
    /// The block id.
    pub fn digest(&self) -> Digest {
        self.block.digest()
    }

    /// Verifies the author's signature, the parent QC, the optional TC, the round rules and
    /// every proof of availability in the payload.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        self.verify_with(committee, chain_id, &mut Uncached)
    }

    /// [`SignedBlock::verify`] with certificates checked by `certs`: the header
    /// ([`SignedBlock::verify_header_with`]), then every proof of availability in the payload.
    pub fn verify_with(
        &self,
        committee: &Committee,
        chain_id: ChainId,
        certs: &mut dyn CertificateVerifier,
    ) -> Result<()> {
        self.verify_header_with(committee, chain_id, certs)?;
        for proof in &self.block.payload {
            proof.verify(committee, chain_id)?;
        }
        Ok(())
    }

    /// Everything [`SignedBlock::verify_with`] checks except the payload's proofs of
    /// availability: the epochs, the payload size limit ([`MAX_BLOCK_PAYLOAD`]), the round
    /// rules, the author's signature, the parent QC and the optional TC. Whoever accepts a
    /// block checked this way must check its proofs before relying on them (consensus does so
    /// through its payload validator before voting).
    pub fn verify_header_with(
        &self,
        committee: &Committee,
        chain_id: ChainId,
        certs: &mut dyn CertificateVerifier,
    ) -> Result<()> {
        let b = &self.block;
        check_epoch(committee, b.epoch)?;
        if b.payload.len() > MAX_BLOCK_PAYLOAD {
            return Err(Error::TooLarge {
                what: "block payload",
                size: b.payload.len(),
                limit: MAX_BLOCK_PAYLOAD,
            });
        }
        if b.round <= b.parent_qc.round() {
            return Err(Error::Malformed {
                what: "block",
                reason: format!(
                    "round {} is not above its parent QC's round {}",
                    b.round,
                    b.parent_qc.round()
                ),
            });
        }
        let skipped = b.skipped_rounds().count();
        if b.failed_leaders.len() != skipped {
            return Err(Error::Malformed {
                what: "block",
                reason: format!(
                    "records {} failed leaders for {skipped} skipped rounds",
                    b.failed_leaders.len()
                ),
            });
        }
        for leader in b.failed_leaders.iter().flatten() {
            committee.member(*leader)?;
        }
        let follows_parent = b.parent_qc.round().checked_next() == Some(b.round);
        match &b.timeout_cert {
            None if !follows_parent => {
                return Err(Error::Malformed {
                    what: "block",
                    reason: format!(
                        "round {} skips rounds after its parent QC's round {} without a timeout certificate",
                        b.round,
                        b.parent_qc.round()
                    ),
                });
            }
            Some(tc) if tc.round.checked_next() != Some(b.round) => {
                return Err(Error::Malformed {
                    what: "block",
                    reason: format!(
                        "timeout certificate is for round {}, block is at round {}",
                        tc.round, b.round
                    ),
                });
            }
            Some(tc) if tc.high_qc.round() > b.parent_qc.round() => {
                return Err(Error::Malformed {
                    what: "block",
                    reason: "parent QC is older than the timeout certificate's high QC".into(),
                });
            }
            _ => {}
        }
        check_epoch(committee, b.parent_qc.data.epoch)?;
        if let Some(tc) = &b.timeout_cert {
            check_epoch(committee, tc.epoch)?;
        }
        let author_key = &committee.member(b.author)?.protocol_key;
        let block_message = signing_message(Domain::Block, b.epoch, chain_id, b);
        let qc = &b.parent_qc;
        if qc.round() == Round(0) || certs.knows_qc(qc) {
            author_key.verify_message(&block_message, &self.signature, "block")?;
            certs.verify_qc(qc, committee, chain_id)?;
        } else {
            // The author's signature and the QC's signatures in one batch.
            check_epoch(committee, qc.data.epoch)?;
            qc.signatures
                .check_signers(committee, Threshold::Quorum, "quorum certificate")?;
            let vote_message = qc.data.message(chain_id);
            let mut items = Vec::with_capacity(qc.signatures.len() + 1);
            items.push(SignedMessage {
                message: &block_message,
                key: author_key,
                signature: &self.signature,
            });
            for (index, signature) in qc.signatures.signatures() {
                items.push(SignedMessage {
                    message: &vote_message,
                    key: &committee.member(*index)?.protocol_key,
                    signature,
                });
            }
            verify_batch(&items).map_err(|bad| Error::InvalidSignature {
                what: if bad.contains(&0) {
                    "block"
                } else {
                    "quorum certificate"
                },
            })?;
            certs.remember_qc(qc);
        }
        if let Some(tc) = &b.timeout_cert {
            certs.verify_tc(tc, committee, chain_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{batch::BatchInfo, multisig::MultiSignature, test_utils::committee};

    const CHAIN: ChainId = ChainId(7);

    /// A proof of availability whose signature is junk.
    fn bad_proof(sequence: u64) -> ProofOfAvailability {
        ProofOfAvailability {
            info: BatchInfo {
                author: ValidatorIndex(0),
                epoch: Epoch(1),
                sequence,
                expires_at: TimestampMs(u64::MAX),
                digest: Digest::of_bytes(&sequence.to_le_bytes()),
                num_transactions: 1,
                num_bytes: 100,
            },
            signatures: MultiSignature::from_raw(vec![
                (ValidatorIndex(0), Signature([7; 64])),
                (ValidatorIndex(1), Signature([7; 64])),
            ]),
        }
    }

    fn block(payload: Vec<ProofOfAvailability>, key: &KeyPair) -> SignedBlock {
        Block {
            epoch: Epoch(1),
            round: Round(1),
            author: ValidatorIndex(0),
            parent_qc: QuorumCertificate::genesis(Epoch(1), CHAIN),
            timeout_cert: None,
            failed_leaders: vec![],
            payload,
            timestamp: TimestampMs(5),
        }
        .sign(key, CHAIN)
    }

    #[test]
    fn the_header_check_leaves_the_proofs_to_the_caller() {
        let (committee, keys) = committee(4);
        let b = block(vec![bad_proof(1)], &keys[0]);
        assert_eq!(
            b.verify_header_with(&committee, CHAIN, &mut Uncached),
            Ok(())
        );
        assert!(
            b.verify_with(&committee, CHAIN, &mut Uncached).is_err(),
            "full verification checks the proofs"
        );
        assert!(b.verify(&committee, CHAIN).is_err());
        // Everything else is still checked by the header check: the author's signature...
        let mut forged = b.clone();
        forged.signature.0[3] ^= 0x40;
        assert!(
            forged
                .verify_header_with(&committee, CHAIN, &mut Uncached)
                .is_err()
        );
        // ...and the size limit.
        let big = block(
            (0..=MAX_BLOCK_PAYLOAD as u64).map(bad_proof).collect(),
            &keys[0],
        );
        assert!(matches!(
            big.verify_header_with(&committee, CHAIN, &mut Uncached),
            Err(Error::TooLarge { .. })
        ));
    }
}
