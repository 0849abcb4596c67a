//! Byzantine behaviours, as the network sees them. A faulty replica runs an ordinary core; what
//! makes it faulty is how its messages leave it (`send_as`) and what it does with
//! the messages it receives (`byzantine_receive`): it stays silent, equivocates
//! as leader (a second block for the same round to odd-numbered replicas), votes for every
//! proposal it sees, corrupts its signatures and forges votes in other validators' names, or
//! replays old messages to random replicas; asked for its certificates by an amnesiac replica,
//! a faulty replica withholds them (`answer_as`). Every random choice is drawn from the run's
//! RNG.

use super::{Simulation, scenario::Behaviour, scenario::CHAIN};
use crate::{
    leader::LeaderElection,
    message::{CertificateAnswer, ConsensusMessage},
};
use keel_types::{Digest, QuorumCertificate, Round, TimestampMs, ValidatorIndex, Vote, VoteData};
use rand::Rng;

/// Most received messages a replaying replica remembers.
const REPLAY_MEMORY: usize = 64;

impl Simulation {
    /// Sends `message` from `from` to `to` the way `from`'s behaviour dictates.
    pub(super) fn send_as(&mut self, from: usize, to: usize, message: ConsensusMessage) {
        match self.replicas[from].behaviour {
            Behaviour::Honest | Behaviour::DoubleVote => self.net.transmit(from, to, message),
            Behaviour::Silent => {
                if from == to {
                    self.net.transmit(from, to, message);
                }
            }
            Behaviour::Replay => {
                self.net.transmit(from, to, message);
                let seen = &self.replicas[from].seen;
                if !seen.is_empty() {
                    let old = seen[self.net.rng.gen_range(0..seen.len())].clone();
                    let target = self.net.rng.gen_range(0..self.replicas.len());
                    self.net.transmit(from, target, old);
                }
            }
            Behaviour::ForgeSignatures => {
                if from == to {
                    self.net.transmit(from, to, message);
                    return;
                }
                let mut corrupted = message.clone();
                match &mut corrupted {
                    ConsensusMessage::Proposal(b) => b.signature.0[3] ^= 0x40,
                    ConsensusMessage::Vote(v) => v.signature.0[3] ^= 0x40,
                    ConsensusMessage::Timeout(t) => t.signature.0[3] ^= 0x40,
                    ConsensusMessage::TimeoutCertificate(tc) => {
                        if let Some(s) = tc.signatures.first_mut() {
                            s.2.0[3] ^= 0x40;
                        }
                    }
                }
                self.net.transmit(from, to, corrupted);
                // A vote in another validator's name, signed with this replica's own key.
                let victim = (from + 1) % self.replicas.len();
                let forged = Vote::new(
                    VoteData {
                        epoch: self.committee.epoch(),
                        round: message.round(),
                        block: Digest::of_bytes(&self.net.rng.r#gen::<[u8; 8]>()),
                    },
                    ValidatorIndex(victim as u32),
                    &self.keys[from],
                    CHAIN,
                );
                self.net.transmit(from, to, ConsensusMessage::Vote(forged));
            }
            Behaviour::Equivocate => {
                if let ConsensusMessage::Proposal(block) = &message
                    && block.block.author.as_usize() == from
                    && to != from
                    && to % 2 == 1
                {
                    let mut other = block.block.clone();
                    other.timestamp = TimestampMs(other.timestamp.0 + 1);
                    let twin = other.sign(&self.keys[from], CHAIN);
                    self.net
                        .transmit(from, to, ConsensusMessage::Proposal(twin));
                } else {
                    self.net.transmit(from, to, message);
                }
            }
        }
    }

    /// What replica `server` answers a certificate request with, `honest` being its core's
    /// answer: a silent replica answers nothing; the other faulty ones withhold, answering with
    /// the genesis QC (certificates are verified, so lowering is all a liar can do).
    pub(super) fn answer_as(
        &self,
        server: usize,
        honest: CertificateAnswer,
    ) -> Option<CertificateAnswer> {
        match self.replicas[server].behaviour {
            Behaviour::Honest => Some(honest),
            Behaviour::Silent => None,
            _ => Some(CertificateAnswer {
                high_qc: QuorumCertificate::genesis(self.committee.epoch(), CHAIN),
                last_tc: None,
            }),
        }
    }

    /// What a faulty replica `to` does with a verified message besides handing it to its core:
    /// a replaying replica remembers it, a double-voting one votes for any proposal.
    pub(super) fn byzantine_receive(&mut self, to: usize, message: &ConsensusMessage) {
        let behaviour = self.replicas[to].behaviour;
        if behaviour == Behaviour::Replay {
            let seen = &mut self.replicas[to].seen;
            if seen.len() >= REPLAY_MEMORY {
                seen.pop_front();
            }
            seen.push_back(message.clone());
        }
        if behaviour == Behaviour::DoubleVote
            && let ConsensusMessage::Proposal(b) = message
        {
            // Vote for every proposal seen, whatever was voted before.
            let vote = Vote::new(
                VoteData {
                    epoch: b.block.epoch,
                    round: b.block.round,
                    block: b.digest(),
                },
                ValidatorIndex(to as u32),
                &self.keys[to],
                CHAIN,
            );
            let Some(core) = self.replicas[to].core.as_ref() else {
                return;
            };
            let next = core
                .election()
                .leader(Round(b.block.round.0 + 1))
                .as_usize();
            self.send(to, next, ConsensusMessage::Vote(vote));
        }
    }
}
