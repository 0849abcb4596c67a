//! The execution thread: executes committed blocks in height order as they appear in the store
//! (so after a restart it simply resumes at the executed marker + 1), fetching batches it lacks
//! from the validators that signed their proofs.

use crate::{persist, service::Shared};
use keel_authority::{BlockToExecute, Executor, resolve_batches};
use keel_types::Height;
use std::{sync::Arc, time::Duration};

/// Runs until shutdown; the thread's body.
pub fn run(mut executor: Executor, shared: Arc<Shared>) {
    let mut committed = shared.committed_rx();
    while !shared.shutdown.is_cancelled() {
        let next = Height(executor.marker().height.0 + 1);
        let record = match persist::committed_at(&shared.store, next) {
            Ok(Some(record)) => record,
            Ok(None) => {
                // Wait for the next commit (or poll, in case a notification was missed).
                let _ = shared.runtime.block_on(async {
                    tokio::time::timeout(Duration::from_millis(200), committed.changed()).await
                });
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read a committed block; stopping");
                shared.shutdown.cancel();
                return;
            }
        };
        let block = &record.block;
        let batches = loop {
            match resolve_batches(&shared.store, &shared.net, &block.block.payload) {
                Ok(batches) => break batches,
                Err(e) => {
                    tracing::warn!(height = %next, error = %e, "waiting for a batch");
                    if shared.shutdown.is_cancelled() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let to_execute = BlockToExecute {
            height: next,
            digest: block.digest(),
            timestamp: block.block.timestamp,
            transactions: batches.iter().flat_map(|b| &b.transactions).collect(),
        };
        let started = std::time::Instant::now();
        let outcome = match executor.execute_block(&to_execute) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(height = %next, error = %e, "execution failed; stopping");
                shared.shutdown.cancel();
                return;
            }
        };
        let root = match executor.store().state_root() {
            Ok(root) => root,
            Err(e) => {
                tracing::error!(error = %e, "cannot compute the state root; stopping");
                shared.shutdown.cancel();
                return;
            }
        };
        shared.on_executed(outcome, root, started.elapsed());
    }
}
