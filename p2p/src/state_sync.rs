//! Checkpoint state sync: how a node downloads the whole state as of a certified checkpoint
//! from several peers at once and proves every bucket before it is installed, as a pure state
//! machine ([`StateSync`]) whose [`StateAction`]s a node task carries out.
//!
//! # What is proven
//! The checkpoint's certificate (more than 2/3 of the stake) vouches for its state root, the
//! root of the 256 bucket checksums (see keel-storage's state root). The client:
//! 1. fetches the 256 checksums from a peer ([`Request::StateSummary`](crate::Request)) and
//!    accepts them only if their root is the certified one;
//! 2. downloads each bucket in chunks, in key order, all chunks of a bucket from one peer;
//!    each chunk passes the embedder's chunk check before it is staged (keys strictly
//!    increasing after the resume key, every key in the bucket, sizes within limits);
//! 3. when a bucket is complete, has the staged bucket's checksum recomputed and compares it
//!    with the proven one. A mismatch drops what was staged for the bucket, strikes the peer
//!    that served it, and the bucket is downloaded again from another peer.
//!
//! A peer that serves a bad summary, a bad chunk or a bucket with the wrong checksum gets a
//! strike and is dropped for this sync at `max_strikes`; a failed request is retried
//! elsewhere. When every bucket is proven, [`StateAction::Install`] says the staged state may
//! replace the node's. Progress survives a crash: the embedder restores each bucket's state
//! ([`BucketProgress`]) from its staging area.

use keel_types::{Digest, ValidatorIndex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Number of state buckets.
pub const BUCKETS: usize = 256;

/// Default of [`StateSyncConfig::min_gap`].
pub const DEFAULT_STATE_MIN_GAP: u64 = 10_000;
/// Default of [`StateSyncConfig::startup_wait_ms`].
pub const DEFAULT_STATE_STARTUP_WAIT_MS: u64 = 5_000;
/// Default of [`StateSyncConfig::max_in_flight`].
pub const DEFAULT_STATE_MAX_IN_FLIGHT: usize = 12;
/// Default of [`StateSyncConfig::max_in_flight_per_peer`].
pub const DEFAULT_STATE_MAX_IN_FLIGHT_PER_PEER: usize = 4;
/// Default of [`StateSyncConfig::chunk_bytes`].
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;
/// Default of [`StateSyncConfig::max_strikes`].
pub const DEFAULT_STATE_MAX_STRIKES: u32 = 2;
/// Default of [`StateSyncConfig::max_bucket_bytes`].
pub const DEFAULT_MAX_BUCKET_BYTES: u64 = 1 << 30;
/// Default of [`StateSyncConfig::request_timeout_ms`].
pub const DEFAULT_STATE_REQUEST_TIMEOUT_MS: u64 = 20_000;

/// State sync's tunables (the node config's `[state_sync]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSyncConfig {
    /// Whether a node that starts far behind may state-sync at all.
    pub enabled: bool,
    /// A node that starts more than this many heights below its peers' latest certified
    /// checkpoint state-syncs (it always does when no peer still holds the heights above its
    /// own; smaller gaps are left to range sync).
    pub min_gap: u64,
    /// How long a starting node waits for its peers' status before deciding, in ms.
    pub startup_wait_ms: u64,
    /// Chunk requests on their way at once (with `chunk_bytes`, bounds the memory of a sync).
    pub max_in_flight: usize,
    /// Chunk requests to one peer at once.
    pub max_in_flight_per_peer: usize,
    /// Bytes of entries a server puts in one chunk (it may send a little more).
    pub chunk_bytes: usize,
    /// Bad answers after which a peer is not asked again in this sync.
    pub max_strikes: u32,
    /// Most bytes of one bucket staged from one server: a server that sends more (a bucket
    /// that never ends) is struck and the bucket fetched again elsewhere.
    pub max_bucket_bytes: u64,
    /// How long a chunk request may take before it is asked elsewhere, in ms.
    pub request_timeout_ms: u64,
}

impl Default for StateSyncConfig {
    fn default() -> Self {
        StateSyncConfig {
            enabled: true,
            min_gap: DEFAULT_STATE_MIN_GAP,
            startup_wait_ms: DEFAULT_STATE_STARTUP_WAIT_MS,
            max_in_flight: DEFAULT_STATE_MAX_IN_FLIGHT,
            max_in_flight_per_peer: DEFAULT_STATE_MAX_IN_FLIGHT_PER_PEER,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_strikes: DEFAULT_STATE_MAX_STRIKES,
            max_bucket_bytes: DEFAULT_MAX_BUCKET_BYTES,
            request_timeout_ms: DEFAULT_STATE_REQUEST_TIMEOUT_MS,
        }
    }
}

impl StateSyncConfig {
    /// Checks the values state sync cannot run with: the field at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, value) in [
            ("max_in_flight", self.max_in_flight as u64),
            ("max_in_flight_per_peer", self.max_in_flight_per_peer as u64),
            ("max_strikes", u64::from(self.max_strikes)),
            ("request_timeout_ms", self.request_timeout_ms),
            ("min_gap", self.min_gap),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if self.max_bucket_bytes < self.chunk_bytes as u64 {
            return Err((
                "max_bucket_bytes",
                format!(
                    "{} is below chunk_bytes ({})",
                    self.max_bucket_bytes, self.chunk_bytes
                ),
            ));
        }
        // A chunk must fit in a sync frame with room for its framing.
        let most = crate::protocol::MAX_RANGE_BYTES;
        if self.chunk_bytes == 0 || self.chunk_bytes > most {
            return Err((
                "chunk_bytes",
                format!("{} is not between 1 and {most}", self.chunk_bytes),
            ));
        }
        Ok(())
    }
}

/// Where one bucket's download stands (restored from staging after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketProgress {
    /// Nothing staged yet, or staged up to `after` (the last staged key).
    Downloading {
        /// The last key staged.
        after: Option<Vec<u8>>,
    },
    /// Staged completely and checked against its proven checksum.
    Proven,
}

/// Something the node task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateAction {
    /// Ask `peer` for the 256 bucket checksums of the checkpoint; answer with
    /// [`StateSync::on_summary`] or [`StateSync::on_summary_failed`].
    RequestSummary {
        /// Whom to ask.
        peer: ValidatorIndex,
    },
    /// Ask `peer` for the chunk of `bucket` after `after`; answer with
    /// [`StateSync::on_chunk`] or [`StateSync::on_chunk_failed`].
    RequestChunk {
        /// Whom to ask.
        peer: ValidatorIndex,
        /// The bucket.
        bucket: u8,
        /// The last key staged (none: from the start).
        after: Option<Vec<u8>>,
    },
    /// Write these checked entries to the bucket's staging area.
    Stage {
        /// The bucket.
        bucket: u8,
        /// The entries, in key order.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// The bucket is staged completely: recompute its checksum from staging and report it with
    /// [`StateSync::on_bucket_checksum`].
    Checksum {
        /// The bucket.
        bucket: u8,
    },
    /// Drop what is staged for the bucket (it did not prove out).
    ClearBucket {
        /// The bucket.
        bucket: u8,
    },
    /// The bucket is proven (persist that, so a restart does not redo it).
    BucketProven {
        /// The bucket.
        bucket: u8,
    },
    /// A peer lied and is not asked again in this sync.
    DropPeer {
        /// The peer.
        peer: ValidatorIndex,
        /// What it did.
        reason: String,
    },
    /// Every bucket is proven: install the staged state.
    Install,
    /// No usable peer is left: the sync cannot finish now (its staging is kept).
    Stuck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Bucket {
    /// To download from `after`.
    Waiting {
        after: Option<Vec<u8>>,
    },
    /// A chunk request is on its way.
    Asked {
        peer: ValidatorIndex,
        after: Option<Vec<u8>>,
    },
    /// Complete; its checksum is being recomputed (served by `peer`).
    Checking {
        peer: Option<ValidatorIndex>,
    },
    Proven,
}

#[derive(Debug, Clone, Default)]
struct Peer {
    in_flight: usize,
    strikes: u32,
    /// Failed requests (timeouts, refusals): tried last, and every third is a strike.
    failures: u32,
}

/// One state sync towards a certified state root.
#[derive(Debug)]
pub struct StateSync {
    config: StateSyncConfig,
    root: Digest,
    root_of: fn(&[Digest]) -> Digest,
    check: ChunkCheck,
    checksums: Option<Vec<Digest>>,
    summary_asked: Option<ValidatorIndex>,
    buckets: Vec<Bucket>,
    /// Who served the staged part of each bucket (a bucket is served by one peer at a time;
    /// after a restart the staged part's server is unknown).
    servers: BTreeMap<u8, ValidatorIndex>,
    /// Bytes staged for each bucket in this sync.
    staged_bytes: Vec<u64>,
    peers: BTreeMap<ValidatorIndex, Peer>,
    finished: bool,
}

/// The chunk check the embedder supplies (keel-storage's `check_chunk`).
pub type ChunkCheck = fn(u8, Option<&[u8]>, &[(Vec<u8>, Vec<u8>)]) -> Result<(), String>;

impl StateSync {
    /// A sync towards the certified state `root` (whose bucket checksums hash to it with
    /// `root_of`), from `peers`, resuming each bucket from `progress` (256 entries, or empty
    /// for a fresh sync).
    pub fn new(
        config: StateSyncConfig,
        (root, root_of): (Digest, fn(&[Digest]) -> Digest),
        check: ChunkCheck,
        peers: &[ValidatorIndex],
        progress: Vec<BucketProgress>,
    ) -> Self {
        let buckets = if progress.len() == BUCKETS {
            progress
                .into_iter()
                .map(|p| match p {
                    BucketProgress::Downloading { after } => Bucket::Waiting { after },
                    BucketProgress::Proven => Bucket::Proven,
                })
                .collect()
        } else {
            vec![Bucket::Waiting { after: None }; BUCKETS]
        };
        StateSync {
            config,
            root,
            root_of,
            check,
            checksums: None,
            summary_asked: None,
            buckets,
            servers: BTreeMap::new(),
            staged_bytes: vec![0; BUCKETS],
            peers: peers.iter().map(|p| (*p, Peer::default())).collect(),
            finished: false,
        }
    }

    /// Buckets proven so far.
    pub fn proven(&self) -> usize {
        self.buckets
            .iter()
            .filter(|b| matches!(b, Bucket::Proven))
            .count()
    }

    /// The first requests.
    pub fn start(&mut self) -> Vec<StateAction> {
        let mut out = Vec::new();
        self.progress(&mut out);
        out
    }

    /// `peer`'s bucket checksums.
    pub fn on_summary(&mut self, peer: ValidatorIndex, checksums: Vec<Digest>) -> Vec<StateAction> {
        let mut out = Vec::new();
        if self.summary_asked == Some(peer) {
            self.summary_asked = None;
            if checksums.len() == BUCKETS && (self.root_of)(&checksums) == self.root {
                self.checksums = Some(checksums);
            } else {
                self.strike(
                    peer,
                    "bucket checksums that do not hash to the certified root",
                    &mut out,
                );
            }
        }
        self.progress(&mut out);
        out
    }

    /// The summary request to `peer` failed.
    pub fn on_summary_failed(&mut self, peer: ValidatorIndex) -> Vec<StateAction> {
        let mut out = Vec::new();
        if self.summary_asked == Some(peer) {
            self.summary_asked = None;
            self.cool(peer, &mut out);
        }
        self.progress(&mut out);
        out
    }

    /// `peer`'s chunk of `bucket` (asked after `after`).
    pub fn on_chunk(
        &mut self,
        peer: ValidatorIndex,
        bucket: u8,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        complete: bool,
    ) -> Vec<StateAction> {
        let mut out = Vec::new();
        let b = usize::from(bucket);
        let Bucket::Asked { peer: asked, after } = self.buckets[b].clone() else {
            return out;
        };
        if asked != peer {
            return out;
        }
        self.release(peer);
        let bytes: u64 = entries
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        let over_limit = self.staged_bytes[b].saturating_add(bytes) > self.config.max_bucket_bytes;
        if let Err(reason) = (self.check)(bucket, after.as_deref(), &entries) {
            self.buckets[b] = Bucket::Waiting { after };
            self.strike(
                peer,
                &format!("a bad chunk of bucket {bucket}: {reason}"),
                &mut out,
            );
        } else if entries.is_empty() && !complete {
            // No progress: ask elsewhere.
            self.buckets[b] = Bucket::Waiting { after };
            self.cool(peer, &mut out);
        } else if over_limit {
            // A bucket that never ends: drop it and its server.
            self.staged_bytes[b] = 0;
            self.servers.remove(&bucket);
            self.buckets[b] = Bucket::Waiting { after: None };
            out.push(StateAction::ClearBucket { bucket });
            self.strike(
                peer,
                &format!("bucket {bucket} beyond its byte limit"),
                &mut out,
            );
        } else {
            self.staged_bytes[b] += bytes;
            let next = entries.last().map(|(k, _)| k.clone()).or(after);
            if !entries.is_empty() {
                self.servers.insert(bucket, peer);
                out.push(StateAction::Stage { bucket, entries });
            }
            if complete {
                self.buckets[b] = Bucket::Checking {
                    peer: self.servers.get(&bucket).copied(),
                };
                out.push(StateAction::Checksum { bucket });
            } else {
                self.buckets[b] = Bucket::Waiting { after: next };
            }
        }
        self.progress(&mut out);
        out
    }

    /// The chunk request for `bucket` to `peer` failed.
    pub fn on_chunk_failed(&mut self, peer: ValidatorIndex, bucket: u8) -> Vec<StateAction> {
        let mut out = Vec::new();
        let b = usize::from(bucket);
        if let Bucket::Asked { peer: asked, after } = self.buckets[b].clone()
            && asked == peer
        {
            self.release(peer);
            self.buckets[b] = Bucket::Waiting { after };
            self.cool(peer, &mut out);
        }
        self.progress(&mut out);
        out
    }

    /// The checksum recomputed from what is staged for `bucket`.
    pub fn on_bucket_checksum(&mut self, bucket: u8, checksum: Digest) -> Vec<StateAction> {
        let mut out = Vec::new();
        let b = usize::from(bucket);
        let Bucket::Checking { peer } = self.buckets[b] else {
            return out;
        };
        let Some(expected) = self.checksums.as_ref().map(|c| c[b]) else {
            return out;
        };
        if checksum == expected {
            self.buckets[b] = Bucket::Proven;
            out.push(StateAction::BucketProven { bucket });
        } else {
            self.buckets[b] = Bucket::Waiting { after: None };
            self.servers.remove(&bucket);
            self.staged_bytes[b] = 0;
            out.push(StateAction::ClearBucket { bucket });
            if let Some(peer) = peer {
                self.strike(
                    peer,
                    &format!("bucket {bucket} with the wrong checksum"),
                    &mut out,
                );
            }
        }
        self.progress(&mut out);
        out
    }

    fn release(&mut self, peer: ValidatorIndex) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// A peer that failed a request is tried after the others; every third failure counts
    /// as a strike, so a peer that never answers is eventually dropped.
    fn cool(&mut self, peer: ValidatorIndex, out: &mut Vec<StateAction>) {
        let failures = self.peers.get_mut(&peer).map(|p| {
            p.failures += 1;
            p.failures
        });
        if failures.is_some_and(|f| f % 3 == 0) {
            self.strike(peer, "three failed requests", out);
        }
    }

    fn strike(&mut self, peer: ValidatorIndex, reason: &str, out: &mut Vec<StateAction>) {
        let max = self.config.max_strikes;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.strikes += 1;
            if p.strikes == max {
                out.push(StateAction::DropPeer {
                    peer,
                    reason: reason.to_string(),
                });
            }
        }
    }

    fn usable(&self, peer: &Peer) -> bool {
        peer.strikes < self.config.max_strikes
    }

    fn pick_peer(&self) -> Option<ValidatorIndex> {
        self.peers
            .iter()
            .filter(|(_, p)| self.usable(p) && p.in_flight < self.config.max_in_flight_per_peer)
            .min_by_key(|(v, p)| (p.failures, p.in_flight, **v))
            .map(|(v, _)| *v)
    }

    fn in_flight(&self) -> usize {
        self.buckets
            .iter()
            .filter(|b| matches!(b, Bucket::Asked { .. }))
            .count()
    }

    fn progress(&mut self, out: &mut Vec<StateAction>) {
        if self.finished {
            return;
        }
        if self.peers.values().all(|p| !self.usable(p)) {
            self.finished = true;
            out.push(StateAction::Stuck);
            return;
        }
        if self.checksums.is_none() {
            if self.summary_asked.is_none() {
                // Every usable peer failed the summary lately: take turns anyway.
                if let Some(peer) = self.pick_peer() {
                    self.summary_asked = Some(peer);
                    out.push(StateAction::RequestSummary { peer });
                } else {
                    self.finished = true;
                    out.push(StateAction::Stuck);
                }
            }
            return;
        }
        if self.buckets.iter().all(|b| matches!(b, Bucket::Proven)) {
            self.finished = true;
            out.push(StateAction::Install);
            return;
        }
        let mut room = self.config.max_in_flight.saturating_sub(self.in_flight());
        for b in 0..BUCKETS {
            if room == 0 {
                break;
            }
            let Bucket::Waiting { after } = &self.buckets[b] else {
                continue;
            };
            // A bucket is served by one peer from start to end (its checksum failing must
            // name the server); a partly staged bucket stays with its server while usable.
            let bucket = b as u8;
            let peer = match self.servers.get(&bucket) {
                Some(p) => match self.peers.get(p) {
                    Some(state) if self.usable(state) => {
                        if state.in_flight >= self.config.max_in_flight_per_peer {
                            continue; // its server is busy: later
                        }
                        Some(*p)
                    }
                    _ => None,
                },
                None => self.pick_peer(),
            };
            let Some(peer) = peer else {
                if self.servers.contains_key(&bucket) {
                    // Its server was dropped: start the bucket over elsewhere.
                    self.servers.remove(&bucket);
                    self.staged_bytes[b] = 0;
                    self.buckets[b] = Bucket::Waiting { after: None };
                    out.push(StateAction::ClearBucket { bucket });
                }
                continue;
            };
            let after = after.clone();
            self.buckets[b] = Bucket::Asked {
                peer,
                after: after.clone(),
            };
            if let Some(p) = self.peers.get_mut(&peer) {
                p.in_flight += 1;
            }
            out.push(StateAction::RequestChunk {
                peer,
                bucket,
                after,
            });
            room -= 1;
        }
    }
}
