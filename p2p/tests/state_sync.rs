//! Checkpoint state sync's state machine against simulated peers: honest peers bring every
//! bucket, proven, to the node; lying peers (a bad summary, a malformed chunk, a bucket with
//! the wrong content) are struck and the sync completes from the others; a resumed sync only
//! fetches what is missing; with no usable peer it reports that it is stuck.

use keel_p2p::state_sync::{BUCKETS, BucketProgress, StateAction, StateSync, StateSyncConfig};
use keel_types::{Digest, ValidatorIndex};
use std::collections::VecDeque;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A state: the bucket of a key is its first byte (enough for the machine, which does not
/// know how buckets are assigned).
fn state(keys: u32) -> Vec<Entries> {
    let mut buckets = vec![Vec::new(); BUCKETS];
    for i in 0..keys {
        let key = [&[(i % 256) as u8][..], &i.to_be_bytes()[..]].concat();
        buckets[(i % 256) as usize].push((key, format!("value {i}").into_bytes()));
    }
    for b in &mut buckets {
        b.sort();
    }
    buckets
}

fn checksum(entries: &[(Vec<u8>, Vec<u8>)]) -> Digest {
    Digest::of_bytes(&bcs::to_bytes(entries).unwrap())
}

fn root_of(checksums: &[Digest]) -> Digest {
    Digest::of_bytes(&bcs::to_bytes(checksums).unwrap())
}

fn check(bucket: u8, after: Option<&[u8]>, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    let mut previous = after.map(<[u8]>::to_vec);
    for (k, _) in entries {
        if k.first() != Some(&bucket) {
            return Err("key outside the bucket".into());
        }
        if previous.as_ref().is_some_and(|p| k <= p) {
            return Err("keys not increasing".into());
        }
        previous = Some(k.clone());
    }
    Ok(())
}

/// How a simulated peer answers.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Honest,
    /// Answers nothing.
    Dead,
    /// Serves buckets with one value changed (passes the chunk check, fails the checksum).
    WrongValues,
    /// Serves chunks whose keys are out of order.
    Malformed,
    /// Serves a summary that does not hash to the root.
    BadSummary,
    /// Serves a bucket that never ends (fresh keys in order, never `complete`).
    Endless,
}

struct Outcome {
    staged: Vec<Entries>,
    dropped: Vec<u32>,
    end: StateAction,
    chunk_requests: usize,
}

fn run(
    source: &[Entries],
    peers: &[Peer],
    progress: Vec<BucketProgress>,
    staged: Vec<Entries>,
) -> Outcome {
    let checksums: Vec<Digest> = source.iter().map(|b| checksum(b)).collect();
    let root = root_of(&checksums);
    let config = StateSyncConfig {
        chunk_bytes: 200,
        max_bucket_bytes: 5_000,
        max_in_flight: 5,
        max_in_flight_per_peer: 2,
        ..StateSyncConfig::default()
    };
    let ids: Vec<ValidatorIndex> = (0..peers.len() as u32).map(ValidatorIndex).collect();
    let mut sync = StateSync::new(config, (root, root_of), check, &ids, progress);
    let mut staged = staged;
    let mut queue: VecDeque<StateAction> = sync.start().into();
    let mut dropped = Vec::new();
    let mut chunk_requests = 0;
    let mut steps = 0;
    while let Some(action) = queue.pop_front() {
        steps += 1;
        assert!(steps < 200_000, "state sync does not end");
        let next = match action {
            StateAction::RequestSummary { peer } => match peers[peer.0 as usize] {
                Peer::Dead => sync.on_summary_failed(peer),
                Peer::BadSummary => sync.on_summary(peer, vec![Digest::default(); BUCKETS]),
                _ => sync.on_summary(peer, checksums.clone()),
            },
            StateAction::RequestChunk {
                peer,
                bucket,
                after,
            } => {
                chunk_requests += 1;
                let b = &source[bucket as usize];
                let start = b.partition_point(|(k, _)| after.as_ref().is_some_and(|a| k <= a));
                let mut entries: Entries = b[start..].iter().take(3).cloned().collect();
                let complete = start + entries.len() == b.len();
                match peers[peer.0 as usize] {
                    Peer::Dead => sync.on_chunk_failed(peer, bucket),
                    Peer::Endless => {
                        let last = after.unwrap_or_else(|| vec![bucket]);
                        let endless: Entries = (1..=3u8)
                            .map(|i| ([&last[..], &[i; 40][..]].concat(), vec![i; 40]))
                            .collect();
                        sync.on_chunk(peer, bucket, endless, false)
                    }
                    Peer::WrongValues => {
                        if let Some(e) = entries.first_mut() {
                            e.1 = b"forged".to_vec();
                        }
                        sync.on_chunk(peer, bucket, entries, complete)
                    }
                    Peer::Malformed if entries.len() > 1 => {
                        entries.reverse();
                        sync.on_chunk(peer, bucket, entries, complete)
                    }
                    _ => sync.on_chunk(peer, bucket, entries, complete),
                }
            }
            StateAction::Stage { bucket, entries } => {
                staged[bucket as usize].extend(entries);
                continue;
            }
            StateAction::Checksum { bucket } => {
                let sum = checksum(&staged[bucket as usize]);
                sync.on_bucket_checksum(bucket, sum)
            }
            StateAction::ClearBucket { bucket } => {
                staged[bucket as usize].clear();
                continue;
            }
            StateAction::BucketProven { .. } => continue,
            StateAction::DropPeer { peer, .. } => {
                dropped.push(peer.0);
                continue;
            }
            end @ (StateAction::Install | StateAction::Stuck) => {
                return Outcome {
                    staged,
                    dropped,
                    end,
                    chunk_requests,
                };
            }
        };
        queue.extend(next);
    }
    panic!("state sync ended without Install or Stuck");
}

fn fresh() -> (Vec<BucketProgress>, Vec<Entries>) {
    (Vec::new(), vec![Vec::new(); BUCKETS])
}

#[test]
fn honest_peers_bring_every_bucket_proven() {
    let source = state(2_000);
    let (p, s) = fresh();
    let out = run(&source, &[Peer::Honest, Peer::Honest, Peer::Honest], p, s);
    assert_eq!(out.end, StateAction::Install);
    assert_eq!(out.staged, source);
    assert!(out.dropped.is_empty());
}

#[test]
fn lying_peers_are_dropped_and_the_others_complete_the_sync() {
    let source = state(2_000);
    for liar in [
        Peer::WrongValues,
        Peer::Malformed,
        Peer::BadSummary,
        Peer::Dead,
        Peer::Endless,
    ] {
        let (p, s) = fresh();
        let out = run(&source, &[liar, Peer::Honest, Peer::Honest], p, s);
        assert_eq!(out.end, StateAction::Install);
        assert_eq!(
            out.staged, source,
            "the staged state is exactly the source's"
        );
        if liar != Peer::Dead {
            assert_eq!(out.dropped, vec![0], "the liar is dropped");
        }
    }
}

#[test]
fn a_resumed_sync_fetches_only_what_is_missing() {
    let source = state(2_000);
    // Buckets below 100 proven before the crash; bucket 100 half staged.
    let mut progress = Vec::new();
    let mut staged = vec![Vec::new(); BUCKETS];
    for b in 0..BUCKETS {
        if b < 100 {
            progress.push(BucketProgress::Proven);
            staged[b] = source[b].clone();
        } else if b == 100 {
            let half = source[b].len() / 2;
            staged[b] = source[b][..half].to_vec();
            progress.push(BucketProgress::Downloading {
                after: Some(source[b][half - 1].0.clone()),
            });
        } else {
            progress.push(BucketProgress::Downloading { after: None });
        }
    }
    let out = run(&source, &[Peer::Honest, Peer::Honest], progress, staged);
    assert_eq!(out.end, StateAction::Install);
    assert_eq!(out.staged, source);
    let (p, s) = fresh();
    let full = run(&source, &[Peer::Honest, Peer::Honest], p, s);
    assert!(
        out.chunk_requests < full.chunk_requests * 2 / 3,
        "resumed {} requests, fresh {}",
        out.chunk_requests,
        full.chunk_requests
    );
}

#[test]
fn with_only_liars_or_dead_peers_the_sync_is_stuck() {
    let source = state(500);
    let (p, s) = fresh();
    let out = run(&source, &[Peer::WrongValues, Peer::Dead], p, s);
    assert_eq!(out.end, StateAction::Stuck);
}
