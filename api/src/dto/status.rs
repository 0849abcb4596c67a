//! The node status as the public API shows it (`GET /v1/status`), and its sync state.

use super::CheckpointRefJson;
use serde::{Deserialize, Serialize};

/// Node status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    /// Chain id.
    pub chain_id: u64,
    /// This node's index in the current committee (`None` while it is not a member: a
    /// joining validator that still syncs, or one removed).
    pub validator: Option<u32>,
    /// Epoch.
    pub epoch: u64,
    /// Current consensus round.
    pub round: u64,
    /// Highest committed height.
    pub committed_height: u64,
    /// Highest executed height.
    pub executed_height: u64,
    /// State root after the executed height.
    pub state_root: String,
    /// Transactions executed since genesis.
    pub executed_transactions: u64,
    /// Validators in the current committee (0 from a node that predates this field).
    #[serde(default)]
    pub committee_size: usize,
    /// Validators that verify the transaction signatures of each batch: its author (at
    /// admission) and the others its proof's acknowledgements need (f + 1 with equal stakes;
    /// 0 from a node that predates this field).
    #[serde(default)]
    pub batch_verifiers: usize,
    /// Connected peers.
    pub peers: usize,
    /// Transactions waiting in the mempool.
    pub mempool_size: usize,
    /// Whether the node follows consensus or is catching up.
    pub sync: SyncJson,
    /// The latest certified checkpoint this node holds (absent before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_checkpoint: Option<CheckpointRefJson>,
}

/// A node's sync state as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJson {
    /// `starting` (at start-up, before any sync: asking peers whether to state-sync first),
    /// `following` (taking part in consensus), `range_sync` (fetching committed blocks) or
    /// `state_sync` (installing a certified checkpoint's state, at start-up).
    pub state: String,
    /// The committed height range sync is heading for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_height: Option<u64>,
    /// How much of the way from where the sync started to the target is done, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

/// The current committee as this node sees it (`GET /v1/committee`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeJson {
    /// The epoch.
    pub epoch: u64,
    /// The members, in index order.
    pub members: Vec<MemberJson>,
}

/// One committee member: its stake, this node's connection to it, and its recent activity
/// in the committed blocks (the leader-reputation windows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJson {
    /// Index in the committee.
    pub index: u32,
    /// Protocol public key (hex).
    pub protocol_key: String,
    /// Stake.
    pub stake: u64,
    /// Whether this member is the node answering.
    pub this_node: bool,
    /// Whether the answering node has a connection to it (true for itself).
    pub connected: bool,
    /// Blocks it proposed in the recent committed blocks (absent with round-robin leaders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed: Option<u32>,
    /// Recent parent certificates it signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voted: Option<u32>,
    /// Recent rounds it led that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u32>,
}
