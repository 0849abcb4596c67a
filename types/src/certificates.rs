//! Certificates and the votes and timeouts they are made of: [`VoteData`] and
//! [`QuorumCertificate`], [`Timeout`] and [`TimeoutCertificate`], and the
//! [`CertificateVerifier`] that checks them (with or without a cache). Blocks, which carry
//! these certificates, live in [`crate::consensus`].
//!
//! Everything here is verified against a [`Committee`] before use: the epoch matches, signers
//! are members, signatures are valid in their own domain, and certificates carry more than 2/3
//! of the stake. The round-0 QC of an epoch is its genesis certificate: it carries no
//! signatures and certifies exactly [`genesis_digest`].

use crate::{
    batch::check_epoch,
    committee::Committee,
    crypto::{Domain, KeyPair, Signature, SignedMessage, signing_message, verify_batch},
    digest::Digest,
    error::{Error, Result},
    ids::{ChainId, Epoch, Round, ValidatorIndex},
    multisig::{MultiSignature, Threshold, check_signer_order},
};
use serde::{Deserialize, Serialize};

/// Checks the certificates messages carry. Receivers that see one certificate many times (every
/// proposal and timeout carries a QC) plug in a cache; [`Uncached`] verifies every time.
pub trait CertificateVerifier {
    /// Verifies a QC.
    fn verify_qc(
        &mut self,
        qc: &QuorumCertificate,
        committee: &Committee,
        chain_id: ChainId,
    ) -> Result<()>;
    /// Verifies a TC.
    fn verify_tc(
        &mut self,
        tc: &TimeoutCertificate,
        committee: &Committee,
        chain_id: ChainId,
    ) -> Result<()>;
    /// Whether `qc` is already known to be valid (lets a block's signature and its QC's
    /// signatures be checked in one batch when it is not).
    fn knows_qc(&mut self, _qc: &QuorumCertificate) -> bool {
        false
    }
    /// Records that `qc` verified.
    fn remember_qc(&mut self, _qc: &QuorumCertificate) {}
}

/// Verifies every certificate in full.
#[derive(Debug, Default, Clone, Copy)]
pub struct Uncached;

impl CertificateVerifier for Uncached {
    fn verify_qc(
        &mut self,
        qc: &QuorumCertificate,
        committee: &Committee,
        chain_id: ChainId,
    ) -> Result<()> {
        qc.verify(committee, chain_id)
    }

    fn verify_tc(
        &mut self,
        tc: &TimeoutCertificate,
        committee: &Committee,
        chain_id: ChainId,
    ) -> Result<()> {
        tc.verify_with(committee, chain_id, self)
    }
}

/// The digest the genesis QC of `epoch` certifies.
pub fn genesis_digest(epoch: Epoch, chain_id: ChainId) -> Digest {
    Digest::of_tagged("keel/genesis", &(epoch, chain_id))
}

/// What a vote signs: a block at a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoteData {
    /// The epoch of the block.
    pub epoch: Epoch,
    /// The round of the block.
    pub round: Round,
    /// The block's digest.
    pub block: Digest,
}

impl VoteData {
    pub(crate) fn message(&self, chain_id: ChainId) -> [u8; 32] {
        signing_message(Domain::Vote, self.epoch, chain_id, self)
    }
}

/// A QC: votes for one block from more than 2/3 of the stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCertificate {
    /// The certified block.
    pub data: VoteData,
    /// The voters' signatures.
    pub signatures: MultiSignature,
}

impl QuorumCertificate {
    /// The genesis certificate of `epoch`.
    pub fn genesis(epoch: Epoch, chain_id: ChainId) -> Self {
        QuorumCertificate {
            data: VoteData {
                epoch,
                round: Round(0),
                block: genesis_digest(epoch, chain_id),
            },
            signatures: MultiSignature::default(),
        }
    }

    /// The certified round.
    pub fn round(&self) -> Round {
        self.data.round
    }

    /// The certified block.
    pub fn block(&self) -> Digest {
        self.data.block
    }

    /// Verifies the certificate.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        check_epoch(committee, self.data.epoch)?;
        if self.data.round == Round(0) {
            let genesis = genesis_digest(self.data.epoch, chain_id);
            if self.data.block != genesis || !self.signatures.is_empty() {
                return Err(Error::Malformed {
                    what: "quorum certificate",
                    reason: "a round-0 QC must be the epoch's genesis certificate".into(),
                });
            }
            return Ok(());
        }
        self.signatures.verify(
            committee,
            Threshold::Quorum,
            &self.data.message(chain_id),
            "quorum certificate",
        )
    }
}

/// What a timeout signs: the round given up on and the signer's highest certified round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutData {
    /// The epoch.
    pub epoch: Epoch,
    /// The round that timed out.
    pub round: Round,
    /// The round of the signer's highest QC.
    pub high_qc_round: Round,
}

impl TimeoutData {
    fn message(&self, chain_id: ChainId) -> [u8; 32] {
        signing_message(Domain::Timeout, self.epoch, chain_id, self)
    }
}

/// A validator's signed timeout, carrying its highest QC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeout {
    /// The epoch.
    pub epoch: Epoch,
    /// The round given up on.
    pub round: Round,
    /// The signer's highest QC.
    pub high_qc: QuorumCertificate,
    /// The signer.
    pub author: ValidatorIndex,
    /// Signature over [`TimeoutData`] in [`Domain::Timeout`].
    pub signature: Signature,
}

impl Timeout {
    /// Signs a timeout for `round` with `high_qc`.
    pub fn new(
        epoch: Epoch,
        round: Round,
        high_qc: QuorumCertificate,
        author: ValidatorIndex,
        key: &KeyPair,
        chain_id: ChainId,
    ) -> Self {
        let data = TimeoutData {
            epoch,
            round,
            high_qc_round: high_qc.round(),
        };
        Timeout {
            epoch,
            round,
            high_qc,
            author,
            signature: key.sign_message(&data.message(chain_id)),
        }
    }

    /// The signed-over data.
    pub fn data(&self) -> TimeoutData {
        TimeoutData {
            epoch: self.epoch,
            round: self.round,
            high_qc_round: self.high_qc.round(),
        }
    }

    /// Verifies the signer, signature and carried QC.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        self.verify_with(committee, chain_id, &mut Uncached)
    }

    /// [`Timeout::verify`] with the carried QC checked by `certs`.
    pub fn verify_with(
        &self,
        committee: &Committee,
        chain_id: ChainId,
        certs: &mut dyn CertificateVerifier,
    ) -> Result<()> {
        check_epoch(committee, self.epoch)?;
        check_epoch(committee, self.high_qc.data.epoch)?;
        if self.high_qc.round() >= self.round {
            return Err(Error::Malformed {
                what: "timeout",
                reason: format!(
                    "high QC round {} is not below the timeout round {}",
                    self.high_qc.round(),
                    self.round
                ),
            });
        }
        committee.member(self.author)?.protocol_key.verify_message(
            &self.data().message(chain_id),
            &self.signature,
            "timeout",
        )?;
        certs.verify_qc(&self.high_qc, committee, chain_id)
    }
}

/// A TC: timeouts for one round from more than 2/3 of the stake, with the highest QC among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutCertificate {
    /// The epoch.
    pub epoch: Epoch,
    /// The round that timed out.
    pub round: Round,
    /// The highest QC reported by any signer.
    pub high_qc: QuorumCertificate,
    /// Per signer, ascending: its highest QC round and its timeout signature.
    pub signatures: Vec<(ValidatorIndex, Round, Signature)>,
}

impl TimeoutCertificate {
    /// Verifies signers, stake, every signature, and that `high_qc` is the highest reported.
    pub fn verify(&self, committee: &Committee, chain_id: ChainId) -> Result<()> {
        self.verify_with(committee, chain_id, &mut Uncached)
    }

    /// [`TimeoutCertificate::verify`] with the high QC checked by `certs`.
    pub fn verify_with(
        &self,
        committee: &Committee,
        chain_id: ChainId,
        certs: &mut dyn CertificateVerifier,
    ) -> Result<()> {
        check_epoch(committee, self.epoch)?;
        check_epoch(committee, self.high_qc.data.epoch)?;
        check_signer_order(
            self.signatures.iter().map(|(i, _, _)| *i),
            committee,
            Threshold::Quorum,
            "timeout certificate",
        )?;
        let highest = self
            .signatures
            .iter()
            .map(|(_, r, _)| *r)
            .max()
            .unwrap_or_default();
        if highest != self.high_qc.round() {
            return Err(Error::Malformed {
                what: "timeout certificate",
                reason: format!(
                    "high QC round {} differs from the highest reported round {highest}",
                    self.high_qc.round()
                ),
            });
        }
        if highest >= self.round {
            return Err(Error::Malformed {
                what: "timeout certificate",
                reason: format!(
                    "reported QC round {highest} is not below the timeout round {}",
                    self.round
                ),
            });
        }
        let messages: Vec<[u8; 32]> = self
            .signatures
            .iter()
            .map(|(_, high_qc_round, _)| {
                TimeoutData {
                    epoch: self.epoch,
                    round: self.round,
                    high_qc_round: *high_qc_round,
                }
                .message(chain_id)
            })
            .collect();
        let mut items = Vec::with_capacity(messages.len());
        for ((index, _, signature), message) in self.signatures.iter().zip(&messages) {
            items.push(SignedMessage {
                message,
                key: &committee.member(*index)?.protocol_key,
                signature,
            });
        }
        verify_batch(&items).map_err(|_| Error::InvalidSignature {
            what: "timeout certificate",
        })?;
        certs.verify_qc(&self.high_qc, committee, chain_id)
    }
}
