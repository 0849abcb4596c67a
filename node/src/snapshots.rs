//! The state snapshots this node serves to peers that state-sync: a thread that holds a
//! RocksDB snapshot of the state as of each recent checkpoint height and answers bucket
//! summaries and chunks from it.
//!
//! - The execution thread calls [`Snapshots::take`] right after executing a checkpoint height
//!   and before executing the next one, so the snapshot is exactly the state the checkpoint
//!   certifies; `take` returns once the snapshot and its bucket checksums are held.
//! - At most `keep` snapshots are held (the oldest is released): a snapshot pins the old
//!   versions of every key written after it until released, so this bounds the extra disk.
//! - Requests (from the p2p request handler, on the blocking pool) wait for the thread's
//!   answer; the thread owns the store handle the snapshots borrow, which is why it is a thread.

use keel_storage::{BucketChunk, StateSnapshot, Store};
use keel_types::{Digest, Height};
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
};

/// Requests waiting for the snapshot thread before callers block.
const QUEUE: usize = 64;

enum Message {
    Take {
        height: Height,
        done: SyncSender<()>,
    },
    Summary {
        height: Height,
        reply: SyncSender<Option<Vec<Digest>>>,
    },
    Chunk {
        height: Height,
        bucket: u8,
        after: Option<Vec<u8>>,
        max_bytes: usize,
        reply: SyncSender<Result<BucketChunk, String>>,
    },
    /// Release every snapshot and the store, and end the thread.
    Stop,
}

/// The handle to the snapshot thread (cheap to clone).
#[derive(Clone)]
pub struct Snapshots {
    tx: SyncSender<Message>,
    thread: Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Snapshots {
    /// Starts the thread; it keeps the last `keep` snapshots.
    pub fn spawn(store: Arc<Store>, keep: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("keel-snapshots".into())
            .spawn(move || run(&store, keep.max(1), rx))?;
        Ok(Snapshots {
            tx,
            thread: Arc::new(parking_lot::Mutex::new(Some(thread))),
        })
    }

    /// Ends the thread and waits until it has released the store (at shutdown: the store must
    /// close before the process exits, or RocksDB's background threads outlive it and abort
    /// the exit). Requests made afterwards are answered "stopped".
    pub fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::warn!("the snapshot thread panicked");
        }
    }

    /// Takes a snapshot of the state as it is now, for checkpoint height `height`; returns
    /// once it is held.
    pub fn take(&self, height: Height) {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Message::Take { height, done }).is_ok() {
            let _ = wait.recv();
        }
    }

    /// The bucket checksums of the snapshot at `height`, if held.
    pub fn summary(&self, height: Height) -> Option<Vec<Digest>> {
        let (reply, wait) = sync_channel(1);
        self.tx.send(Message::Summary { height, reply }).ok()?;
        wait.recv().ok().flatten()
    }

    /// A chunk of `bucket` after `after` from the snapshot at `height`.
    pub fn chunk(
        &self,
        height: Height,
        bucket: u8,
        after: Option<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<BucketChunk, String> {
        let (reply, wait) = sync_channel(1);
        self.tx
            .send(Message::Chunk {
                height,
                bucket,
                after,
                max_bytes,
                reply,
            })
            .map_err(|_| "the snapshot thread has stopped".to_string())?;
        wait.recv()
            .map_err(|_| "the snapshot thread has stopped".to_string())?
    }
}

fn run(store: &Store, keep: usize, rx: Receiver<Message>) {
    let mut held: VecDeque<(Height, StateSnapshot<'_>, Vec<Digest>)> = VecDeque::new();
    while let Ok(message) = rx.recv() {
        match message {
            Message::Take { height, done } => {
                let snapshot = store.snapshot();
                match store.state_hash() {
                    Ok(hash) => {
                        held.retain(|(h, _, _)| *h != height);
                        held.push_back((height, snapshot, hash.checksums().to_vec()));
                        while held.len() > keep {
                            held.pop_front();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, %height, "cannot snapshot the state"),
                }
                let _ = done.send(());
            }
            Message::Summary { height, reply } => {
                let found = held
                    .iter()
                    .find(|(h, _, _)| *h == height)
                    .map(|(_, _, c)| c.clone());
                let _ = reply.send(found);
            }
            Message::Chunk {
                height,
                bucket,
                after,
                max_bytes,
                reply,
            } => {
                let answer = match held.iter().find(|(h, _, _)| *h == height) {
                    Some((_, snapshot, _)) => snapshot
                        .bucket_chunk(bucket, after.as_deref(), max_bytes)
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no state snapshot at height {height}")),
                };
                let _ = reply.send(answer);
            }
            Message::Stop => return,
        }
    }
}
