//! A set of validator signatures over one message, checked against a stake threshold.
//!
//! ed25519 signatures do not aggregate, so a certificate carries one signature per signer, in
//! strictly ascending signer order. The order makes the encoding canonical and lets verification
//! reject duplicates in one pass. Verification checks membership, order, stake *before* any
//! signature (cheap checks first), then all signatures in one batch.

use crate::{
    committee::Committee,
    crypto::{Signature, SignedMessage, verify_batch},
    error::{Error, Result},
    ids::ValidatorIndex,
};
use serde::{Deserialize, Serialize};

/// How much stake a certificate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    /// More than 2/3 of the total stake.
    Quorum,
    /// More than 1/3 of the total stake (at least one honest signer).
    Validity,
}

impl Threshold {
    fn fraction(self) -> &'static str {
        match self {
            Threshold::Quorum => "2/3",
            Threshold::Validity => "1/3",
        }
    }

    /// Whether `stake` meets this threshold in `committee`.
    pub fn is_met(self, committee: &Committee, stake: u64) -> bool {
        match self {
            Threshold::Quorum => committee.is_quorum(stake),
            Threshold::Validity => committee.is_validity(stake),
        }
    }
}

/// Signatures by distinct validators, ascending by index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiSignature {
    signatures: Vec<(ValidatorIndex, Signature)>,
}

impl MultiSignature {
    /// Builds a set from signatures in any order; later duplicates of an index are dropped.
    pub fn from_signatures(mut signatures: Vec<(ValidatorIndex, Signature)>) -> Self {
        signatures.sort_by_key(|(i, _)| *i);
        signatures.dedup_by_key(|(i, _)| *i);
        MultiSignature { signatures }
    }

    /// Builds a set exactly as given, without sorting (for decoding tests and adversaries).
    pub fn from_raw(signatures: Vec<(ValidatorIndex, Signature)>) -> Self {
        MultiSignature { signatures }
    }

    /// The signatures, ascending by signer.
    pub fn signatures(&self) -> &[(ValidatorIndex, Signature)] {
        &self.signatures
    }

    /// Mutable access, for tests that tamper with certificates.
    pub fn signatures_mut(&mut self) -> &mut Vec<(ValidatorIndex, Signature)> {
        &mut self.signatures
    }

    /// Number of signers.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether there are no signers.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// The signer indices.
    pub fn signers(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        self.signatures.iter().map(|(i, _)| *i)
    }

    /// Checks order, membership and the stake threshold, without checking signatures.
    /// Returns the signers' total stake.
    pub fn check_signers(
        &self,
        committee: &Committee,
        threshold: Threshold,
        what: &'static str,
    ) -> Result<u64> {
        check_signer_order(self.signers(), committee, threshold, what)
    }

    /// Verifies that every signature is over `message` by its signer, and that the signers
    /// meet `threshold` in `committee`.
    pub fn verify(
        &self,
        committee: &Committee,
        threshold: Threshold,
        message: &[u8; 32],
        what: &'static str,
    ) -> Result<()> {
        self.check_signers(committee, threshold, what)?;
        let mut items = Vec::with_capacity(self.signatures.len());
        for (index, signature) in &self.signatures {
            let key = &committee.member(*index)?.protocol_key;
            items.push(SignedMessage {
                message,
                key,
                signature,
            });
        }
        verify_batch(&items).map_err(|_| Error::InvalidSignature { what })
    }
}

/// Checks that `signers` are strictly ascending committee members whose stake meets
/// `threshold`; returns their stake.
pub(crate) fn check_signer_order(
    signers: impl Iterator<Item = ValidatorIndex>,
    committee: &Committee,
    threshold: Threshold,
    what: &'static str,
) -> Result<u64> {
    let mut stake: u64 = 0;
    let mut previous: Option<ValidatorIndex> = None;
    for index in signers {
        if previous.is_some_and(|p| index <= p) {
            return Err(Error::DuplicateSigner { index, what });
        }
        previous = Some(index);
        let member = committee.member(index)?;
        // Cannot overflow: the committee's total stake fits in u64.
        stake = stake.saturating_add(member.stake.0);
    }
    if !threshold.is_met(committee, stake) {
        return Err(Error::InsufficientStake {
            what,
            stake,
            total: committee.total_stake(),
            needed_fraction: threshold.fraction(),
        });
    }
    Ok(stake)
}
