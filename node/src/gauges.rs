//! The gauges task: refreshes gauges whose values live in other components (connections and
//! byte counters in the endpoint, the mempool's size).

use crate::{metrics::Metrics, peers::Net};
use keel_authority::Mempool;
use parking_lot::Mutex;
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// Refreshes the gauges every `every` until shutdown.
pub async fn run(
    metrics: Arc<Metrics>,
    endpoint: Net,
    mempool: Arc<Mutex<Mempool>>,
    shutdown: CancellationToken,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        metrics.peers.set(endpoint.connected_peers().len() as i64);
        let c = endpoint.counters();
        metrics
            .bytes_out
            .set(c.bytes_sent.load(Ordering::Relaxed) as i64);
        metrics
            .bytes_in
            .set(c.bytes_received.load(Ordering::Relaxed) as i64);
        metrics.mempool_size.set(mempool.lock().len() as i64);
    }
}
