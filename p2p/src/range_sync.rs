//! Committed-range sync: how a node far behind fetches the committed chain from several peers
//! at once and proves every block it applies committed, as a pure state machine
//! ([`RangeSync`]) whose [`SyncAction`]s a thin node task carries out.
//!
//! # Proof that a range is committed
//! A server answers [`Request::CommittedRange`](crate::Request::CommittedRange) with committed
//! blocks at consecutive heights, plus up to [`RANGE_ANCHOR_BLOCKS`] above the range. The client
//! checks, without trusting the server ([`committed_prefix`]):
//! - every block is of the committee's epoch and names the previous one as its parent (hash
//!   links, so the blocks below a committed block are exactly its committed ancestors);
//! - an **anchor**: the highest block `B` followed by a child `C` with `C.round = B.round + 1`
//!   and a grandchild whose parent QC certifies `C` (signatures verified against the
//!   committee). That QC commits `B` by the 2-chain rule, hence every block up to `B`.
//!
//! Blocks above the last anchor are not used (the next range, or consensus, covers them).
//! Heights are claims of the server; they are checked when a range is applied: its first
//! block's parent must be the last block applied, so a server that shifts heights is caught.
//!
//! # Schedule
//! - The target is a height claimed by validators holding more than 1/3 of the stake (at least
//!   one honest one has it), see [`sync_target`].
//! - Ranges of `chunk_blocks` heights are asked for in order, from peers that claim them,
//!   least-loaded first, at most `max_in_flight` at once (and `max_in_flight_per_peer` per
//!   peer). Answers may arrive in any order; proven prefixes wait (bounded by `max_in_flight`
//!   ranges, so memory is bounded) until every lower height is applied, then are applied in
//!   order.
//! - A short proven prefix (an anchor below the range's top) re-queues the rest of the range.
//! - A peer that answers with a broken chain, a bad QC, a shifted height or another epoch gets
//!   a strike per lie and is dropped for this sync at `max_strikes`; a failed or empty answer is
//!   retried elsewhere. Sync ends ([`SyncAction::Done`]) when the applied height is within
//!   `done_margin` of the target (consensus fetches the last few blocks itself), or
//!   ([`SyncAction::Stuck`]) when no peer can serve the next range.

use crate::protocol::{MAX_REQUEST_ITEMS, RANGE_ANCHOR_BLOCKS};
use keel_types::{ChainId, Committee, Digest, Height, SignedBlock, ValidatorIndex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Default of [`RangeSyncConfig::check_interval_ms`].
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 1_000;
/// Default of [`RangeSyncConfig::trigger_gap`].
pub const DEFAULT_TRIGGER_GAP: u64 = 64;
/// Default of [`RangeSyncConfig::done_margin`].
pub const DEFAULT_DONE_MARGIN: u64 = 8;
/// Default of [`RangeSyncConfig::chunk_blocks`].
pub const DEFAULT_CHUNK_BLOCKS: u64 = 128;
/// Default of [`RangeSyncConfig::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Default of [`RangeSyncConfig::max_in_flight_per_peer`].
pub const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 3;
/// Default of [`RangeSyncConfig::max_strikes`].
pub const DEFAULT_MAX_STRIKES: u32 = 3;
/// Default of [`RangeSyncConfig::request_timeout_ms`].
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Range sync's tunables (the node config's `[sync]` section; every field optional there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RangeSyncConfig {
    /// How often the node compares its committed height with its peers'.
    pub check_interval_ms: u64,
    /// Range sync starts when the sync target is more than this many heights above the
    /// committed height (smaller gaps are left to consensus's block fetching).
    pub trigger_gap: u64,
    /// Range sync ends when the applied height is within this many heights of the target.
    pub done_margin: u64,
    /// Heights asked for in one request (at most the protocol's request limit).
    pub chunk_blocks: u64,
    /// Ranges requested or waiting to be applied at once (bounds the memory a sync holds).
    pub max_in_flight: usize,
    /// Ranges requested from one peer at once.
    pub max_in_flight_per_peer: usize,
    /// Lies (broken chains, bad certificates, shifted heights) after which a peer is no
    /// longer asked during this sync.
    pub max_strikes: u32,
    /// How long a range request may take before it is retried elsewhere.
    pub request_timeout_ms: u64,
}

impl Default for RangeSyncConfig {
    fn default() -> Self {
        RangeSyncConfig {
            check_interval_ms: DEFAULT_CHECK_INTERVAL_MS,
            trigger_gap: DEFAULT_TRIGGER_GAP,
            done_margin: DEFAULT_DONE_MARGIN,
            chunk_blocks: DEFAULT_CHUNK_BLOCKS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_peer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
            max_strikes: DEFAULT_MAX_STRIKES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }
}

impl RangeSyncConfig {
    /// Checks the values sync cannot run with: the field at fault (relative to the section)
    /// and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let max_chunk = (MAX_REQUEST_ITEMS - RANGE_ANCHOR_BLOCKS) as u64;
        if self.chunk_blocks == 0 || self.chunk_blocks > max_chunk {
            return Err((
                "chunk_blocks",
                format!("{} is not between 1 and {max_chunk}", self.chunk_blocks),
            ));
        }
        for (field, value) in [
            ("check_interval_ms", self.check_interval_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_in_flight", self.max_in_flight as u64),
            ("max_in_flight_per_peer", self.max_in_flight_per_peer as u64),
            ("max_strikes", u64::from(self.max_strikes)),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if self.done_margin >= self.trigger_gap {
            return Err((
                "done_margin",
                format!(
                    "{} must be below trigger_gap ({}), or sync would start and end at once",
                    self.done_margin, self.trigger_gap
                ),
            ));
        }
        Ok(())
    }
}

/// Why a range answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// A block of another epoch.
    #[error("block at offset {offset} is of epoch {found}, not {expected}")]
    Epoch {
        /// Offset in the answer.
        offset: usize,
        /// The block's epoch.
        found: u64,
        /// The committee's epoch.
        expected: u64,
    },
    /// A block whose parent is not the block before it.
    #[error("block at offset {offset} does not extend the block before it")]
    Broken {
        /// Offset in the answer.
        offset: usize,
    },
    /// The certificate proving the anchor committed does not verify.
    #[error("the QC anchoring offset {offset} does not verify: {reason}")]
    BadCertificate {
        /// Offset of the anchor.
        offset: usize,
        /// The verifier's message.
        reason: String,
    },
    /// The first block does not extend the chain applied so far (shifted heights).
    #[error("the first block does not extend the block at height {below}")]
    Misplaced {
        /// The height below the range.
        below: Height,
    },
}

/// How many leading blocks of `blocks` (consecutive committed heights, as a server claims) are
/// proven committed: up to and including the highest anchor (see the module docs). Checks the
/// epoch and the hash links of every block and verifies one QC. Blocks of a later epoch end
/// the range (the committee's epoch ended before them; [`epoch_end_prefix`] proves its last
/// blocks).
pub fn committed_prefix(
    blocks: &[SignedBlock],
    committee: &Committee,
    chain_id: ChainId,
) -> Result<usize, RangeError> {
    let epoch = committee.epoch();
    let end = blocks
        .iter()
        .position(|b| b.block.epoch > epoch)
        .unwrap_or(blocks.len());
    let blocks = &blocks[..end];
    let digests: Vec<Digest> = blocks.iter().map(SignedBlock::digest).collect();
    for (offset, b) in blocks.iter().enumerate() {
        if b.block.epoch != epoch {
            return Err(RangeError::Epoch {
                offset,
                found: b.block.epoch.0,
                expected: epoch.0,
            });
        }
        if offset > 0 && b.block.parent() != digests[offset - 1] {
            return Err(RangeError::Broken { offset });
        }
    }
    // The highest anchor: B at i, child at i + 1 one round later, grandchild certifying it.
    let anchor = (0..blocks.len().saturating_sub(2)).rev().find(|&i| {
        let (b, child, grandchild) = (&blocks[i], &blocks[i + 1], &blocks[i + 2]);
        b.block.round.checked_next() == Some(child.block.round)
            && grandchild.block.parent_qc.round() == child.block.round
    });
    let Some(i) = anchor else {
        return Ok(0);
    };
    blocks[i + 2]
        .block
        .parent_qc
        .verify(committee, chain_id)
        .map_err(|e| RangeError::BadCertificate {
            offset: i,
            reason: e.to_string(),
        })?;
    Ok(i + 1)
}

/// How many leading blocks of `blocks`, the first at height `from`, a certified epoch-ending
/// checkpoint proves: its last block `(height, digest)` is in the range and every block before
/// it links to it by hash. The last blocks of an epoch have no certified grandchild in their
/// epoch, so only the checkpoint proves them.
pub fn epoch_end_prefix(blocks: &[SignedBlock], from: Height, end: (Height, Digest)) -> usize {
    let (height, digest) = end;
    let Some(offset) = height.0.checked_sub(from.0).map(|o| o as usize) else {
        return 0;
    };
    if offset >= blocks.len() || blocks[offset].digest() != digest {
        return 0;
    }
    let linked = (1..=offset).all(|i| blocks[i].block.parent() == blocks[i - 1].digest());
    if linked { offset + 1 } else { 0 }
}

/// The height claimed by validators holding more than 1/3 of the stake: the highest height at
/// least one honest validator has committed, if the claims of `claims` are all there is.
pub fn sync_target(committee: &Committee, claims: &[(ValidatorIndex, Height)]) -> Option<Height> {
    let mut sorted: Vec<(Height, ValidatorIndex)> = claims.iter().map(|(v, h)| (*h, *v)).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup_by_key(|(_, v)| *v);
    let mut seen = BTreeSet::new();
    let mut stake = 0u64;
    for (height, v) in sorted {
        if seen.insert(v) {
            stake = stake.saturating_add(committee.stake(v));
        }
        if committee.is_validity(stake) {
            return Some(height);
        }
    }
    None
}

/// Something the node task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAction {
    /// Ask `peer` for the committed range `from..=to` and feed the answer back with
    /// [`RangeSync::on_response`] (or [`RangeSync::on_failure`]).
    Request {
        /// Whom to ask.
        peer: ValidatorIndex,
        /// First height.
        from: Height,
        /// Last height.
        to: Height,
    },
    /// These blocks are proven committed at heights `from..`: persist them as committed (in
    /// this order, after every earlier `Apply`).
    Apply {
        /// Height of the first block.
        from: Height,
        /// The blocks.
        blocks: Vec<SignedBlock>,
    },
    /// A peer lied and is no longer asked in this sync (for logs and metrics).
    DropPeer {
        /// The peer.
        peer: ValidatorIndex,
        /// What it did.
        reason: String,
    },
    /// The applied height is within the done margin of the target.
    Done {
        /// The last height applied.
        applied: Height,
    },
    /// No peer can serve the next height (all dropped or below it): sync gives up for now.
    Stuck {
        /// The last height applied.
        applied: Height,
    },
}

#[derive(Debug, Clone)]
struct PeerState {
    claimed: Height,
    in_flight: usize,
    strikes: u32,
}

/// One range sync, from the last committed block to a target height.
#[derive(Debug)]
pub struct RangeSync {
    config: RangeSyncConfig,
    committee: Committee,
    chain_id: ChainId,
    /// The last height applied and its block's digest.
    applied: Height,
    tip: Digest,
    target: Height,
    peers: BTreeMap<ValidatorIndex, PeerState>,
    /// Requests on their way: first height → (peer, last height).
    in_flight: BTreeMap<u64, (ValidatorIndex, u64)>,
    /// Proven prefixes waiting for the heights below them: first height → (server, blocks).
    ready: BTreeMap<u64, (ValidatorIndex, Vec<SignedBlock>)>,
    /// Ranges to ask for again (short answers, failures), lowest first.
    retry: BTreeSet<(u64, u64)>,
    /// The lowest height never asked for.
    next_new: u64,
    finished: bool,
    /// The epoch's last block, from its certified epoch-ending checkpoint, when known: the
    /// sync ends there (the next epoch's blocks need the next committee).
    epoch_end: Option<(Height, Digest)>,
}

impl RangeSync {
    /// A sync from the committed block `tip` at height `applied` towards `target`, asking the
    /// `peers` that claim heights (this node excluded).
    pub fn new(
        config: RangeSyncConfig,
        committee: Committee,
        chain_id: ChainId,
        (applied, tip): (Height, Digest),
        target: Height,
        peers: &[(ValidatorIndex, Height)],
    ) -> Self {
        RangeSync {
            config,
            committee,
            chain_id,
            applied,
            tip,
            target,
            peers: peers
                .iter()
                .map(|(v, claimed)| {
                    (
                        *v,
                        PeerState {
                            claimed: *claimed,
                            in_flight: 0,
                            strikes: 0,
                        },
                    )
                })
                .collect(),
            in_flight: BTreeMap::new(),
            ready: BTreeMap::new(),
            retry: BTreeSet::new(),
            next_new: applied.0 + 1,
            finished: false,
            epoch_end: None,
        }
    }

    /// Ends the sync at the committee's epoch end, `(height, digest)` of its last block as a
    /// verified epoch-ending checkpoint names it: the target is capped there, and that
    /// checkpoint proves the epoch's last blocks.
    pub fn with_epoch_end(mut self, end: (Height, Digest)) -> Self {
        self.target = self.target.min(end.0);
        self.epoch_end = Some(end);
        self
    }

    /// The last height applied.
    pub fn applied(&self) -> Height {
        self.applied
    }

    /// The target height.
    pub fn target(&self) -> Height {
        self.target
    }

    /// Peers still asked.
    pub fn usable_peers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.strikes < self.config.max_strikes)
            .count()
    }

    /// The first requests.
    pub fn start(&mut self) -> Vec<SyncAction> {
        let mut out = Vec::new();
        self.progress(&mut out);
        out
    }

    /// Handles `peer`'s answer to the request starting at `from`.
    pub fn on_response(
        &mut self,
        peer: ValidatorIndex,
        from: Height,
        blocks: Vec<SignedBlock>,
    ) -> Vec<SyncAction> {
        let mut out = Vec::new();
        let Some((asked, to)) = self.take_in_flight(from.0, peer) else {
            // Not asked (or already answered): ignore.
            return out;
        };
        debug_assert_eq!(asked, peer);
        let wanted = (to - from.0 + 1) as usize;
        let by_checkpoint = self
            .epoch_end
            .map_or(0, |end| epoch_end_prefix(&blocks, from, end));
        let proven =
            committed_prefix(&blocks, &self.committee, self.chain_id).map(|p| p.max(by_checkpoint));
        match proven {
            Err(e) => {
                self.strike(peer, e.to_string(), &mut out);
                self.retry.insert((from.0, to));
            }
            Ok(0) => {
                // Nothing provable: the peer may simply be behind; ask elsewhere or later.
                self.retry.insert((from.0, to));
                self.cool(peer, from.0);
            }
            Ok(proven) => {
                let mut blocks = blocks;
                blocks.truncate(proven.min(wanted));
                let got = blocks.len() as u64;
                if got < wanted as u64 {
                    self.retry.insert((from.0 + got, to));
                }
                self.ready.insert(from.0, (peer, blocks));
            }
        }
        self.apply_ready(&mut out);
        self.progress(&mut out);
        out
    }

    /// Handles a failed request (transport error, timeout, refusal).
    pub fn on_failure(&mut self, peer: ValidatorIndex, from: Height) -> Vec<SyncAction> {
        let mut out = Vec::new();
        if let Some((_, to)) = self.take_in_flight(from.0, peer) {
            self.retry.insert((from.0, to));
            self.cool(peer, from.0);
        }
        self.progress(&mut out);
        out
    }

    fn take_in_flight(&mut self, from: u64, peer: ValidatorIndex) -> Option<(ValidatorIndex, u64)> {
        match self.in_flight.get(&from) {
            Some((p, _)) if *p == peer => {
                let entry = self.in_flight.remove(&from);
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.in_flight = state.in_flight.saturating_sub(1);
                }
                entry
            }
            _ => None,
        }
    }

    /// A peer that could not serve a range from `from` (failure, timeout, nothing provable)
    /// is not asked for `from` or above again in this sync.
    fn cool(&mut self, peer: ValidatorIndex, from: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.claimed = p.claimed.min(Height(from.saturating_sub(1)));
        }
    }

    fn strike(&mut self, peer: ValidatorIndex, reason: String, out: &mut Vec<SyncAction>) {
        let max = self.config.max_strikes;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.strikes += 1;
            if p.strikes == max {
                out.push(SyncAction::DropPeer { peer, reason });
            }
        }
    }

    /// Applies every proven range that continues the applied chain; refuses one that claims
    /// the next heights but does not extend the tip.
    fn apply_ready(&mut self, out: &mut Vec<SyncAction>) {
        while let Some(entry) = self.ready.first_entry() {
            let from = *entry.key();
            if from > self.applied.0 + 1 {
                break;
            }
            let (server, blocks) = entry.remove();
            let skip = (self.applied.0 + 1 - from) as usize;
            if skip >= blocks.len() {
                continue;
            }
            let blocks = blocks[skip..].to_vec();
            if blocks[0].block.parent() != self.tip {
                let e = RangeError::Misplaced {
                    below: self.applied,
                };
                self.strike(server, e.to_string(), out);
                let end = self.applied.0 + blocks.len() as u64;
                self.retry.insert((self.applied.0 + 1, end));
                continue;
            }
            let first = Height(self.applied.0 + 1);
            self.applied = Height(self.applied.0 + blocks.len() as u64);
            self.tip = blocks[blocks.len() - 1].digest();
            out.push(SyncAction::Apply {
                from: first,
                blocks,
            });
        }
        // Retries wholly below what is applied are moot.
        let applied = self.applied.0;
        self.retry = std::mem::take(&mut self.retry)
            .into_iter()
            .filter_map(|(from, to)| (to > applied).then_some((from.max(applied + 1), to)))
            .collect();
    }

    /// Picks the least-loaded usable peer that claims `to`.
    fn pick_peer(&self, to: u64) -> Option<ValidatorIndex> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.strikes < self.config.max_strikes
                    && p.claimed.0 >= to
                    && p.in_flight < self.config.max_in_flight_per_peer
            })
            .min_by_key(|(v, p)| (p.in_flight, **v))
            .map(|(v, _)| *v)
    }

    /// Sends requests while there is room, then says whether sync is over.
    fn progress(&mut self, out: &mut Vec<SyncAction>) {
        if self.finished {
            return;
        }
        let mut stuck_range = None;
        while self.in_flight.len() + self.ready.len() < self.config.max_in_flight {
            let (from, to) = match self.retry.first() {
                Some(r) => *r,
                None if self.next_new <= self.target.0 => {
                    let to = (self.next_new + self.config.chunk_blocks - 1).min(self.target.0);
                    (self.next_new, to)
                }
                None => break,
            };
            // A peer that has the whole range, else one that has its start.
            let choice = self
                .pick_peer(to)
                .map(|p| (p, to))
                .or_else(|| self.pick_peer(from).map(|p| (p, self.peers[&p].claimed.0)));
            let Some((peer, to_asked)) = choice else {
                stuck_range = Some(from);
                break;
            };
            if self.retry.first() == Some(&(from, to)) {
                self.retry.pop_first();
                if to_asked < to {
                    self.retry.insert((to_asked + 1, to));
                }
            } else {
                self.next_new = to_asked + 1;
            }
            let to = to_asked;
            self.in_flight.insert(from, (peer, to));
            if let Some(p) = self.peers.get_mut(&peer) {
                p.in_flight += 1;
            }
            out.push(SyncAction::Request {
                peer,
                from: Height(from),
                to: Height(to),
            });
        }
        // At an epoch's end consensus cannot fetch the rest: sync goes all the way.
        let margin = if self.epoch_end.is_some() {
            0
        } else {
            self.config.done_margin
        };
        if self.applied.0 + margin >= self.target.0 {
            self.finished = true;
            out.push(SyncAction::Done {
                applied: self.applied,
            });
        } else if self.in_flight.is_empty()
            && stuck_range.is_some_and(|from| from == self.applied.0 + 1)
        {
            self.finished = true;
            out.push(SyncAction::Stuck {
                applied: self.applied,
            });
        }
    }
}
