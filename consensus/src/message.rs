//! Consensus messages and their verified form.
//!
//! Bytes from the network decode into [`ConsensusMessage`]; only [`ConsensusMessage::verify`]
//! turns one into a [`Verified`] message, and the core accepts nothing else, so an unverified
//! message cannot reach a handler by mistake. Before paying for signatures, the embedder asks
//! [`crate::Core::precheck`] whether an unverified message is worth verifying at all.

use keel_types::{
    CertificateVerifier, ChainId, Committee, Digest, Epoch, QuorumCertificate, Round, SignedBlock,
    Timeout, TimeoutCertificate, Uncached, ValidatorIndex, Vote,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

use crate::error::Result;

/// What replicas send each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    /// A leader's block for its round.
    Proposal(SignedBlock),
    /// A vote, sent to the next round's leader.
    Vote(Vote),
    /// A round timeout, broadcast.
    Timeout(Timeout),
    /// A timeout certificate, sent to replicas still in the round it ended.
    TimeoutCertificate(TimeoutCertificate),
}

impl ConsensusMessage {
    /// The epoch the message claims (checked against the committee when verified).
    pub fn epoch(&self) -> Epoch {
        match self {
            ConsensusMessage::Proposal(b) => b.block.epoch,
            ConsensusMessage::Vote(v) => v.data.epoch,
            ConsensusMessage::Timeout(t) => t.epoch,
            ConsensusMessage::TimeoutCertificate(tc) => tc.epoch,
        }
    }

    /// The round the message is about.
    pub fn round(&self) -> Round {
        match self {
            ConsensusMessage::Proposal(b) => b.block.round,
            ConsensusMessage::Vote(v) => v.data.round,
            ConsensusMessage::Timeout(t) => t.round,
            ConsensusMessage::TimeoutCertificate(tc) => tc.round,
        }
    }

    /// The validator that signed the message.
    pub fn author(&self) -> ValidatorIndex {
        match self {
            ConsensusMessage::Proposal(b) => b.block.author,
            ConsensusMessage::Vote(v) => v.author,
            ConsensusMessage::Timeout(t) => t.author,
            // A TC has many signers; the first stands for them.
            ConsensusMessage::TimeoutCertificate(tc) => tc
                .signatures
                .first()
                .map_or(ValidatorIndex(0), |(i, _, _)| *i),
        }
    }

    /// Verifies signatures, certificates and epoch against `committee`. A proposal's header is
    /// verified ([`SignedBlock::verify_header_with`]) but not its payload's proofs of
    /// availability: those are the [`crate::PayloadValidator`]'s to check, before any vote.
    pub fn verify(self, committee: &Committee, chain_id: ChainId) -> Result<Verified<Self>> {
        self.verify_with(committee, chain_id, &mut Uncached)
    }

    /// [`ConsensusMessage::verify`], with certificates checked by `certs` (e.g. a
    /// [`CertificateCache`]).
    pub fn verify_with(
        self,
        committee: &Committee,
        chain_id: ChainId,
        certs: &mut dyn CertificateVerifier,
    ) -> Result<Verified<Self>> {
        match &self {
            // The payload's proofs are checked by the payload validator, and only for the
            // proposal this replica is about to vote for: a replayed or non-leader proposal
            // costs no proof verification at all.
            ConsensusMessage::Proposal(b) => b.verify_header_with(committee, chain_id, certs)?,
            ConsensusMessage::Vote(v) => v.verify(committee, chain_id)?,
            ConsensusMessage::Timeout(t) => t.verify_with(committee, chain_id, certs)?,
            ConsensusMessage::TimeoutCertificate(tc) => certs.verify_tc(tc, committee, chain_id)?,
        }
        Ok(Verified(self))
    }
}

/// A value that passed verification against the committee.
///
/// For a [`ConsensusMessage::Proposal`] that means its header (signature, certificates, round
/// rules, size limit), not its payload: a verified proposal's proofs of availability are
/// checked by the core's [`crate::PayloadValidator`] before any vote for it, and that check
/// is the only way to a vote. A fetched block ([`verify_block`]) is verified in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl Verified<ConsensusMessage> {
    /// Wraps a message this replica's own core produced (looped back by the embedder), which
    /// needs no check: the core signed it itself. Never use it for bytes from the network.
    pub fn own(message: ConsensusMessage) -> Self {
        Verified(message)
    }
}

impl<T> Verified<T> {
    /// The verified value.
    pub fn inner(&self) -> &T {
        &self.0
    }

    /// Unwraps the verified value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// A replica's answer to a certificate request ([`crate::Action::RequestCertificates`]): its
/// highest QC and the TC that ended the round it is in, if a TC did. What an amnesiac replica
/// collects from a quorum to learn how far the chain may have gone without it (see
/// [`crate::amnesia`]); served by [`crate::Core::certificate_answer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAnswer {
    /// The answerer's highest QC.
    pub high_qc: QuorumCertificate,
    /// The TC that brought the answerer into its current round, if it entered on a TC.
    pub last_tc: Option<TimeoutCertificate>,
}

impl CertificateAnswer {
    /// The highest round the answer certifies (its QC's or its TC's).
    pub fn certified_round(&self) -> Round {
        let tc_round = self.last_tc.as_ref().map_or(Round(0), |tc| tc.round);
        self.high_qc.round().max(tc_round)
    }

    /// Verifies both certificates against `committee` (the genesis QC of the committee's
    /// epoch verifies without signatures).
    pub fn verify(self, committee: &Committee, chain_id: ChainId) -> Result<Verified<Self>> {
        self.verify_with(committee, chain_id, &mut Uncached)
    }

    /// [`CertificateAnswer::verify`], with certificates checked by `certs`.
    pub fn verify_with(
        self,
        committee: &Committee,
        chain_id: ChainId,
        certs: &mut dyn CertificateVerifier,
    ) -> Result<Verified<Self>> {
        certs.verify_qc(&self.high_qc, committee, chain_id)?;
        if let Some(tc) = &self.last_tc {
            certs.verify_tc(tc, committee, chain_id)?;
        }
        Ok(Verified(self))
    }
}

/// Verifies a fetched block in full, payload proofs included ([`SignedBlock::verify_with`]).
pub fn verify_block(
    block: SignedBlock,
    committee: &Committee,
    chain_id: ChainId,
    certs: &mut dyn CertificateVerifier,
) -> Result<Verified<SignedBlock>> {
    block.verify_with(committee, chain_id, certs)?;
    Ok(Verified(block))
}

/// Remembers certificates that verified, so a QC carried by many messages is checked once.
///
/// Keyed by the blake3 digest of the certificate's canonical encoding: identical bytes verify
/// identically against one committee, so a hit is as good as a check. Bounded: the oldest
/// entries are evicted first. One cache serves one committee (clear it at an epoch change).
#[derive(Debug)]
pub struct CertificateCache {
    seen: HashSet<Digest>,
    order: VecDeque<Digest>,
    capacity: usize,
}

impl CertificateCache {
    /// How many certificates it remembers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// An empty cache remembering up to `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        CertificateCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn remember(&mut self, digest: Digest) {
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(digest);
        self.order.push_back(digest);
    }
}

impl CertificateVerifier for CertificateCache {
    fn verify_qc(
        &mut self,
        qc: &QuorumCertificate,
        committee: &Committee,
        chain_id: ChainId,
    ) -> keel_types::Result<()> {
        let digest = Digest::of_tagged("keel/cache/qc", qc);
        // A hit counts only for this committee's epoch (the cache may outlive an epoch).
        if qc.data.epoch == committee.epoch() && self.seen.contains(&digest) {
            return Ok(());
        }
        qc.verify(committee, chain_id)?;
        self.remember(digest);
        Ok(())
    }

    fn knows_qc(&mut self, qc: &QuorumCertificate) -> bool {
        self.seen.contains(&Digest::of_tagged("keel/cache/qc", qc))
    }

    fn remember_qc(&mut self, qc: &QuorumCertificate) {
        let digest = Digest::of_tagged("keel/cache/qc", qc);
        if !self.seen.contains(&digest) {
            self.remember(digest);
        }
    }

    fn verify_tc(
        &mut self,
        tc: &TimeoutCertificate,
        committee: &Committee,
        chain_id: ChainId,
    ) -> keel_types::Result<()> {
        let digest = Digest::of_tagged("keel/cache/tc", tc);
        if tc.epoch == committee.epoch() && self.seen.contains(&digest) {
            return Ok(());
        }
        tc.verify_with(committee, chain_id, self)?;
        self.remember(digest);
        Ok(())
    }
}
