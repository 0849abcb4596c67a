//! The admin API's JSON shapes: status, consensus view and peers, the epoch, and votes for
//! committee changes.

use super::StatusJson;
use serde::{Deserialize, Serialize};

/// The admin status: the public status and this node's view of consensus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStatusJson {
    /// The public status.
    #[serde(flatten)]
    pub status: StatusJson,
    /// Rounds, timeouts and leader election.
    pub consensus: ConsensusJson,
}

/// This node's view of consensus (admin status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusJson {
    /// The current round.
    pub round: u64,
    /// Its leader.
    pub leader: u32,
    /// The current round timeout in ms (adapted to round latency, backed off while rounds
    /// fail).
    pub round_timeout_ms: u64,
    /// Rounds this node left on a timeout certificate since it started.
    pub failed_rounds: u64,
    /// The election: `reputation` or `round_robin`.
    pub election: String,
    /// Each validator's standing in the current round's draw (empty for round robin).
    pub reputations: Vec<ReputationJson>,
}

/// One validator's leader reputation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReputationJson {
    /// The validator.
    pub validator: u32,
    /// Blocks it proposed in the proposer window.
    pub proposed: u32,
    /// Leader rounds it failed in the proposer window.
    pub failed: u32,
    /// Parent QCs it signed in the voter window.
    pub voted: u32,
    /// Its weight before stake.
    pub weight: u64,
}

/// A peer as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerJson {
    /// Validator index.
    pub validator: u32,
    /// Network public key.
    pub network_key: String,
    /// Configured address.
    pub address: String,
    /// Whether a connection is up.
    pub connected: bool,
}

/// A committee member as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorJson {
    /// Index in the committee.
    pub index: u32,
    /// Protocol public key (hex).
    pub protocol_key: String,
    /// Network public key (hex).
    pub network_key: String,
    /// Stake.
    pub stake: u64,
    /// `host:port`.
    pub address: String,
}

/// A change waiting for votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChangeJson {
    /// The change's digest.
    pub change: String,
    /// What it does.
    pub description: String,
    /// Indices of the members that voted for it.
    pub voters: Vec<u32>,
    /// Their stake.
    pub stake: u64,
    /// Stake needed to schedule it.
    pub needed: u64,
}

/// A change scheduled for the end of the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChangeJson {
    /// The change's digest.
    pub change: String,
    /// What it does.
    pub description: String,
    /// The height whose execution scheduled it.
    pub scheduled_at: u64,
}

/// `GET /admin/epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochJson {
    /// The current epoch.
    pub epoch: u64,
    /// This node's index in the committee, if it is a member.
    pub validator: Option<u32>,
    /// The committee.
    pub committee: Vec<ValidatorJson>,
    /// The last height of the previous epoch.
    pub started_after: u64,
    /// The last height of this epoch, once a change is scheduled.
    pub ends_at: Option<u64>,
    /// The epoch ends after this height at the latest (genesis `max_length_blocks`).
    pub ends_by: Option<u64>,
    /// Changes waiting for votes.
    pub pending: Vec<PendingChangeJson>,
    /// Changes scheduled for the end of the epoch.
    pub scheduled: Vec<ScheduledChangeJson>,
    /// The committee of the next epoch as the scheduled changes make it.
    pub next_committee: Vec<ValidatorJson>,
}

/// `POST /admin/validators`: a validator to add, with its proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddValidatorJson {
    /// Protocol public key (hex).
    pub protocol_key: String,
    /// Network public key (hex).
    pub network_key: String,
    /// `host:port` its peers dial.
    pub address: String,
    /// Positive stake.
    pub stake: u64,
    /// The protocol key's signature over the key pair (hex; `keel keygen` prints it).
    pub proof_protocol: String,
    /// The network key's signature over the key pair (hex).
    pub proof_network: String,
}

/// `PUT /admin/validators/{id}/stake`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StakeJson {
    /// Positive stake.
    pub stake: u64,
}

/// `POST /admin/keys/stage`: which keys to replace (both when the body is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageKeysJson {
    /// Generate a new protocol key.
    #[serde(default = "yes")]
    pub protocol: bool,
    /// Generate a new network key.
    #[serde(default = "yes")]
    pub network: bool,
}

fn yes() -> bool {
    true
}

impl Default for StageKeysJson {
    fn default() -> Self {
        StageKeysJson {
            protocol: true,
            network: true,
        }
    }
}

/// The answer to `POST /admin/keys/stage`: the staged public keys and their proof of
/// possession (what `POST /admin/keys/rotate` votes for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedKeysJson {
    /// The staged protocol public key (hex; the current one if it is not rotated).
    pub protocol_key: String,
    /// The staged network public key (hex; the current one if it is not rotated).
    pub network_key: String,
    /// The staged protocol key's signature over the pair (hex).
    pub proof_protocol: String,
    /// The staged network key's signature over the pair (hex).
    pub proof_network: String,
    /// Whether this request staged them (`false`: they were staged before and are returned
    /// unchanged).
    pub new: bool,
}

/// A change an operator asks its node to vote for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRequest {
    /// Add a validator.
    Add(AddValidatorJson),
    /// Remove the validator `id` (committee index or protocol key).
    Remove {
        /// Index or protocol key (hex).
        validator: String,
    },
    /// Set the stake of validator `id`.
    SetStake {
        /// Index or protocol key (hex).
        validator: String,
        /// Positive stake.
        stake: u64,
    },
    /// Rotate this validator's keys to the staged ones.
    RotateKeys,
}

/// The answer to a governance request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteJson {
    /// The change's digest (equal requests name the same change).
    pub change: String,
    /// What it does.
    pub description: String,
    /// The vote transaction submitted now (`None`: this node's vote was already counted).
    pub transaction: Option<String>,
    /// The epoch in which the change takes effect.
    pub effective_epoch: u64,
    /// Whether the change is already scheduled.
    pub scheduled: bool,
}
