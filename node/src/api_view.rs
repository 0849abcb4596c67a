//! The API's view of the node ([`NodeApi`]): admission into the mempool, reads from the store
//! and the status watch, the receipts stream, peers from the endpoint. It owns no task; the
//! routers call it.

use crate::{
    clock::now_ms,
    epoch::EpochWatch,
    governance,
    keys::KeyRing,
    metrics::Metrics,
    peers::Net,
    pending::PendingTxs,
    persist,
    status::{StatusReader, SyncProgress},
};
use keel_api::{
    NodeApi, SubmitError, SubscriberSlot, Subscription,
    dto::{
        BatchRefJson, BlockJson, ChangeRequest, CheckpointRefJson, ConsensusJson, EpochJson,
        PeerJson, ReputationJson, StageKeysJson, StagedKeysJson, StatusJson, SyncJson, TxLookup,
        VoteJson,
    },
};
use keel_authority::{AccountReader, Mempool, Rejection, checkpoint_store, state};
use keel_storage::Store;
use keel_types::{
    Account, Address, CertifiedCheckpoint, ChainId, Digest, Height, Object, Receipt,
    SignedTransaction,
};
use parking_lot::Mutex;
use std::{collections::HashSet, sync::Arc, time::Duration};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Changes the log filter at run time.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the API reads and where it admits.
pub struct NodeView {
    /// The chain.
    pub chain_id: ChainId,
    /// The epoch (committee, this node's index, governance record).
    pub epoch: EpochWatch,
    /// This validator's keys (the epoch's protocol key signs its governance votes; a
    /// rotation stages new ones here).
    pub keys: Arc<KeyRing>,
    /// Committed state, receipts and blocks.
    pub store: Arc<Store>,
    /// Where submitted transactions are admitted.
    pub mempool: Arc<Mutex<Mempool>>,
    /// Admitted, not yet executed.
    pub pending: Arc<PendingTxs>,
    /// Heights, round, root.
    pub status: StatusReader,
    /// Executed blocks' receipts.
    pub receipts: broadcast::Sender<Arc<Vec<Receipt>>>,
    /// Event-stream subscribers now.
    pub subscribers: Arc<std::sync::atomic::AtomicUsize>,
    /// Most event-stream subscribers at once.
    pub max_subscribers: usize,
    /// Connection state.
    pub net: Net,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness fails after this long without progress.
    pub stall_after: Duration,
    /// Admission refuses while the oldest pending transaction has waited longer.
    pub admission_max_wait: Duration,
    /// Pending transactions that waited longer than this no longer count for that wait.
    pub pending_horizon: Duration,
    /// Whether every validator verifies every batch (`dissemination.all_verify`).
    pub all_verify: bool,
    /// Changes the log filter.
    pub log_reload: LogReload,
    /// Fired by an admin shutdown.
    pub shutdown: CancellationToken,
}

impl NodeApi for NodeView {
    fn submit(&self, txs: Vec<SignedTransaction>) -> Vec<Result<Digest, SubmitError>> {
        // Admission control: while what this node admitted waits too long for execution, the
        // pipeline is behind; refusing early (before any signature check) keeps the latency
        // of what was admitted bounded instead of queueing seconds of work.
        let limit = self.admission_max_wait;
        let waited = self
            .pending
            .oldest_wait(std::time::Instant::now(), self.pending_horizon);
        if waited > limit {
            self.metrics.rejected.inc_by(txs.len() as u64);
            let message = format!(
                "the oldest transaction admitted here has waited {} ms for execution, over the \
                 limit of {} ms (limits.admission_max_wait_ms): retry later",
                waited.as_millis(),
                limit.as_millis()
            );
            return txs
                .iter()
                .map(|_| Err(SubmitError::Overloaded(message.clone())))
                .collect();
        }
        // Signatures are verified outside the pool's lock, which batching takes every tick.
        let admission = self.mempool.lock().admission();
        let checked = admission.check(txs, now_ms(), &state::StoreAccounts(&self.store));
        let results = self.mempool.lock().insert_checked(checked);
        let mut admitted = Vec::new();
        let out = results
            .into_iter()
            .map(|r| match r {
                Ok(d) | Err(Rejection::Duplicate(d)) => {
                    self.metrics.admitted.inc();
                    admitted.push(d);
                    Ok(d)
                }
                Err(Rejection::Overloaded(m)) => {
                    self.metrics.rejected.inc();
                    Err(SubmitError::Overloaded(m))
                }
                Err(e) => {
                    self.metrics.rejected.inc();
                    Err(SubmitError::Invalid(e.to_string()))
                }
            })
            .collect();
        self.pending.insert_all(admitted);
        out
    }

    fn transaction(&self, digest: &Digest) -> Result<TxLookup, String> {
        // Pending first, then the receipt: execution writes the receipt before it forgets the
        // transaction, so one of the two readings sees it (the other order could miss both).
        let pending = self.pending.contains(digest);
        if let Some(r) = state::receipt(&self.store, digest).map_err(|e| e.to_string())? {
            return Ok(TxLookup::Executed(r));
        }
        Ok(if pending {
            TxLookup::Pending
        } else {
            TxLookup::Unknown
        })
    }

    fn account(&self, address: &Address) -> Result<Account, String> {
        state::account(&self.store, address).map_err(|e| e.to_string())
    }

    fn object(&self, owner: &Address, key: &[u8]) -> Result<Option<Object>, String> {
        state::object(&self.store, owner, key).map_err(|e| e.to_string())
    }

    fn block(&self, height: Option<Height>) -> Result<Option<BlockJson>, String> {
        let height = match height {
            Some(h) => h,
            None => self.status.borrow().committed,
        };
        if height.0 == 0 {
            return Ok(None);
        }
        let Some(record) = persist::committed_at(&self.store, height).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let (executed, root) = {
            let s = self.status.borrow();
            (height <= s.executed, s.root_at(height))
        };
        let b = &record.block.block;
        Ok(Some(BlockJson {
            height: height.0,
            digest: record.block.digest().to_string(),
            epoch: b.epoch.0,
            round: b.round.0,
            author: b.author.0,
            timestamp_ms: b.timestamp.0,
            parent: b.parent_qc.block().to_string(),
            batches: b
                .payload
                .iter()
                .map(|p| BatchRefJson {
                    digest: p.info.digest.to_string(),
                    author: p.info.author.0,
                    transactions: p.info.num_transactions,
                })
                .collect(),
            executed,
            state_root: root.map(|r| r.to_string()),
        }))
    }

    fn retained_from(&self) -> Result<Height, String> {
        persist::retained_from(&self.store).map_err(|e| format!("{e:#}"))
    }

    fn checkpoint(&self, sequence: Option<u64>) -> Result<Option<CertifiedCheckpoint>, String> {
        match sequence {
            Some(s) => checkpoint_store::certified(&self.store, s),
            None => checkpoint_store::latest_certified(&self.store),
        }
        .map_err(|e| e.to_string())
    }

    fn status(&self) -> Result<StatusJson, String> {
        // Copy the fields out: the borrow holds the watch's read lock.
        let (round, committed, executed, root, executed_transactions, sync, started) = {
            let s = self.status.borrow();
            (
                s.round,
                s.committed,
                s.executed,
                s.root,
                s.executed_transactions,
                s.sync,
                s.started,
            )
        };
        let (validator, epoch, committee_size, batch_verifiers) = {
            let view = self.epoch.borrow();
            let committee = view.committee();
            let author = keel_types::ValidatorIndex(0);
            let verifiers = if self.all_verify {
                committee.size()
            } else {
                keel_authority::designated_verifiers(committee, author, 0).len() + 1
            };
            (
                view.me.map(|m| m.0),
                view.epoch().0,
                committee.size(),
                verifiers,
            )
        };
        Ok(StatusJson {
            chain_id: self.chain_id.0,
            validator,
            epoch,
            committee_size,
            batch_verifiers,
            round: round.0,
            committed_height: committed.0,
            executed_height: executed.0,
            state_root: root.to_string(),
            executed_transactions,
            peers: self.net.connected_peers().len(),
            mempool_size: self.mempool.lock().len(),
            sync: sync_json(sync, started),
            latest_checkpoint: checkpoint_store::latest_certified(&self.store)
                .map_err(|e| e.to_string())?
                .as_ref()
                .map(CheckpointRefJson::from),
        })
    }

    fn consensus(&self) -> ConsensusJson {
        let s = self.status.borrow();
        let c = &s.consensus;
        ConsensusJson {
            round: s.round.0,
            leader: c.leader.0,
            round_timeout_ms: c.round_timeout_ms,
            failed_rounds: c.failed_rounds,
            election: c.election.to_string(),
            reputations: c
                .reputations
                .iter()
                .map(|r| ReputationJson {
                    validator: r.validator.0,
                    proposed: r.proposed,
                    failed: r.failed,
                    voted: r.voted,
                    weight: r.weight,
                })
                .collect(),
        }
    }

    fn subscribe(&self) -> Result<Subscription, String> {
        let slot =
            SubscriberSlot::take(&self.subscribers, self.max_subscribers).ok_or_else(|| {
                format!(
                    "{} event-stream subscribers already (limits.stream_subscribers); retry later",
                    self.max_subscribers
                )
            })?;
        Ok(Subscription {
            receipts: self.receipts.subscribe(),
            slot,
        })
    }

    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn readiness(&self) -> Result<(), String> {
        let connected = self.net.connected_peers().len();
        let size = self.epoch.borrow().committee().size();
        let others_needed = (2 * (size.saturating_sub(1) / 3)).max(1);
        if size > 1 && connected < others_needed {
            return Err(format!(
                "connected to {connected} peers; {others_needed} needed for a quorum"
            ));
        }
        if !self.status.borrow().started {
            return Err("starting".into());
        }
        match self.status.borrow().sync {
            SyncProgress::Range {
                applied, target, ..
            } => {
                return Err(format!(
                    "range sync: committed height {applied} of {target}"
                ));
            }
            SyncProgress::State { height, buckets } => {
                return Err(format!(
                    "state sync to the checkpoint at height {height}: {buckets} of 256 buckets"
                ));
            }
            SyncProgress::Idle => {}
        }
        let idle = self.status.borrow().last_progress.elapsed();
        if idle > self.stall_after {
            return Err(format!("no commit or execution for {} s", idle.as_secs()));
        }
        Ok(())
    }

    fn peers(&self) -> Vec<PeerJson> {
        let connected: HashSet<_> = self.net.connected_peers().into_iter().collect();
        let view = self.epoch.borrow().clone();
        let me = view.me.map(|m| m.as_usize());
        view.committee()
            .validators()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != me)
            .map(|(i, v)| PeerJson {
                validator: i as u32,
                network_key: v.network_key.to_string(),
                address: v.address.clone(),
                connected: connected.contains(&v.network_key),
            })
            .collect()
    }

    fn set_log_level(&self, filter: &str) -> Result<(), String> {
        (self.log_reload)(filter)
    }

    fn shutdown(&self) {
        self.shutdown.cancel();
    }

    fn epoch(&self) -> Result<EpochJson, String> {
        Ok(governance::epoch_json(&self.epoch.borrow().clone()))
    }

    fn vote(&self, request: ChangeRequest) -> Result<VoteJson, SubmitError> {
        let view = self.epoch.borrow().clone();
        let staged = self.keys.staged();
        let change = governance::change_of(request, &view, staged.as_deref(), self.chain_id)?;
        let key = &view.keys.protocol;
        let address = Address::from_public_key(&key.public());
        let nonce = state::StoreAccounts(&self.store).account(&address).nonce;
        let (answer, tx) = governance::vote(&view, change, key, self.chain_id, nonce)?;
        if let Some(tx) = tx {
            self.submit(vec![tx])
                .pop()
                .unwrap_or_else(|| Err(SubmitError::Invalid("the vote was not admitted".into())))?;
            tracing::info!(change = %answer.change, description = %answer.description, "governance vote submitted");
        }
        Ok(answer)
    }

    fn stage_keys(&self, request: StageKeysJson) -> Result<StagedKeysJson, String> {
        let (staged, new) = self
            .keys
            .stage(request.protocol, request.network)
            .map_err(|e| format!("cannot stage keys: {e:#}"))?;
        if new {
            let (protocol, network) = staged.public();
            tracing::info!(%protocol, %network, "new keys staged for a rotation");
        }
        Ok(governance::staged_json(&staged, new, self.chain_id))
    }
}

/// The sync state as the API names it; `started`: every task runs (until then, with no sync
/// under way, the node is `starting`: it asks its peers whether to state-sync first).
fn sync_json(sync: SyncProgress, started: bool) -> SyncJson {
    match sync {
        SyncProgress::Idle if !started => SyncJson {
            state: "starting".into(),
            target_height: None,
            percent: None,
        },
        SyncProgress::Idle => SyncJson {
            state: "following".into(),
            target_height: None,
            percent: None,
        },
        SyncProgress::State { height, buckets } => SyncJson {
            state: "state_sync".into(),
            target_height: Some(height.0),
            percent: Some(u32::from(buckets) * 100 / 256),
        },
        SyncProgress::Range {
            start,
            applied,
            target,
        } => {
            let span = target.0.saturating_sub(start.0).max(1);
            let done = applied.0.saturating_sub(start.0);
            SyncJson {
                state: "range_sync".into(),
                target_height: Some(target.0),
                percent: Some((done.saturating_mul(100) / span).min(100) as u32),
            }
        }
    }
}
