//! Cheap checks first: what an embedder asks [`Core::precheck`] about an *unverified* message
//! before paying for its signatures.
//!
//! Signature and certificate verification is the expensive part of receiving a message, and a
//! faulty peer can send any number of messages. The precheck refuses, from the message's
//! fields, this replica's round and its configuration alone, every message the core would
//! drop anyway or that no honest peer sends, so such messages cost no signature work. It is
//! pure (no state changes) and does no cryptography; a message that passes must still be
//! verified before it reaches [`Core::handle`].
//!
//! Rules:
//! 1. **The sender is the author.** A proposal, vote or timeout must arrive from the validator
//!    that signed it ([`Error::WrongSender`]). Honest replicas send only their own proposals,
//!    votes and timeouts, so one arriving from another peer is a replay or an impersonation.
//!    (Transports bind a peer to its committee identity, so `from` is trustworthy.)
//! 2. **A proposal comes from its round's leader** ([`Error::NotLeader`]) when this replica's
//!    election is final for the round: the core accepts no other, so nobody else's block is
//!    worth verifying. Where the replica's committed history does not decide the round yet
//!    ([`crate::LeaderElection::is_final`]: it lags, its history is incomplete, or the round
//!    is more than `exclude_rounds` past its last commit) the proposal passes: its
//!    certificates are how a lagging replica catches up, and the core checks the leader again
//!    after adopting them. So for such rounds any member's proposal costs a verification
//!    (one per member and round is all an honest committee sends; before reputation, the
//!    round-robin leader could already send many).
//! 3. **A proposal is not stale** (checked first, as it is the cheapest). A proposal for a
//!    round below the current one is dropped
//!    ([`Error::Stale`]): the core inserts only the current round's proposal (an old block it
//!    needs is fetched when a QC names it), so a replayed proposal is refused unverified.
//!    Proposals *above* the future window pass: their certificates are how a replica far
//!    behind catches up, and the core itself refuses to insert such a block.
//! 4. **A proposal's payload is bounded** by [`CoreConfig::max_block_proofs`]
//!    ([`Error::PayloadTooLarge`]) and the batch bytes it orders by
//!    [`CoreConfig::max_block_bytes`] ([`Error::PayloadTooHeavy`]), committee-wide
//!    parameters: an honest leader never pulls more, each proof would cost a verification, and
//!    every executor would load the batches. The vote checks the same again
//!    ([`payload_within_limits`]).
//! 5. **A vote is within the window:** for the previous round or later (`round + 1 >=
//!    current`, a vote for the previous round can still complete the QC this replica is
//!    forming as leader; [`Error::Stale`]) and at most `max_future_rounds` ahead
//!    ([`Error::TooFarAhead`]).
//! 6. **A timeout is at most `max_future_rounds` ahead** ([`Error::TooFarAhead`]), unless
//!    its high QC is at or above this replica's round: that QC is how a replica far behind
//!    catches up when the others are stuck in a round entered on a QC (no proposal and no TC
//!    to learn from), so such a timeout passes and the core adopts the QC (it buffers nothing
//!    beyond the window). Stale timeouts pass: the core answers one with the TC that ended
//!    its round, which is how the lagging sender catches up.
//! 7. **A timeout certificate has no precheck:** it has many signers (none of them need be
//!    the sender) and, however old, it is harmless once verified and may help this replica.
//!
//! [`CoreConfig::max_block_proofs`]: crate::CoreConfig::max_block_proofs
//! [`CoreConfig::max_block_bytes`]: crate::CoreConfig::max_block_bytes

use crate::interface::CoreConfig;
use crate::{
    core::{Core, PayloadSource, PayloadValidator},
    error::{Error, Result},
    leader::LeaderElection,
    message::ConsensusMessage,
};
use keel_types::{ProofOfAvailability, ValidatorIndex};

/// The batch bytes `payload` orders: the sum of its proofs' certified `num_bytes`.
pub fn payload_bytes(payload: &[ProofOfAvailability]) -> u64 {
    payload
        .iter()
        .fold(0u64, |sum, p| sum.saturating_add(p.info.num_bytes))
}

/// Rule 4: at most `max_block_proofs` proofs ordering at most `max_block_bytes` of batches.
pub fn payload_within_limits(payload: &[ProofOfAvailability], config: &CoreConfig) -> Result<()> {
    if payload.len() > config.max_block_proofs {
        return Err(Error::PayloadTooLarge {
            len: payload.len(),
            limit: config.max_block_proofs,
        });
    }
    let bytes = payload_bytes(payload);
    if bytes > config.max_block_bytes {
        return Err(Error::PayloadTooHeavy {
            bytes,
            limit: config.max_block_bytes,
        });
    }
    Ok(())
}

impl<L: LeaderElection, P: PayloadSource + PayloadValidator> Core<L, P> {
    /// Checks an *unverified* message `msg` received from peer `from` against the rules above,
    /// without any signature work; `Ok` means it is worth verifying. Pure: nothing changes.
    pub fn precheck(&self, from: ValidatorIndex, msg: &ConsensusMessage) -> Result<()> {
        let author = match msg {
            ConsensusMessage::TimeoutCertificate(_) => return Ok(()),
            ConsensusMessage::Proposal(b) => b.block.author,
            ConsensusMessage::Vote(v) => v.author,
            ConsensusMessage::Timeout(t) => t.author,
        };
        if from != author {
            return Err(Error::WrongSender { from, author });
        }
        let round = msg.round();
        let current = self.round();
        match msg {
            ConsensusMessage::Proposal(b) => {
                if round < current {
                    return Err(Error::Stale { round, current });
                }
                let leader = self.leader.leader(round);
                if author != leader && self.leader.is_final(round) {
                    return Err(Error::NotLeader {
                        round,
                        author,
                        leader,
                    });
                }
                payload_within_limits(&b.block.payload, &self.config)
            }
            ConsensusMessage::Vote(_) => {
                if round.0.saturating_add(1) < current.0 {
                    return Err(Error::Stale { round, current });
                }
                self.check_window(round)
            }
            ConsensusMessage::Timeout(t) => {
                if t.high_qc.round() >= current {
                    return Ok(());
                }
                self.check_window(round)
            }
            ConsensusMessage::TimeoutCertificate(_) => Ok(()),
        }
    }
}
