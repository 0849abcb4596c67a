//! The gauges task: refreshes gauges whose values live in other components (connections and
//! byte counters in the endpoint, the mempool's size, disk bytes per column family).

use crate::{metrics::Metrics, peers::Net};
use keel_authority::Mempool;
use keel_storage::Store;
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
    store: Arc<Store>,
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
        for (gauge, counter) in [
            (&metrics.p2p_dropped, &c.dropped),
            (&metrics.p2p_bad_frames, &c.bad_frames),
            (&metrics.p2p_stalled_frames, &c.stalled_frames),
            (&metrics.p2p_replaced_connections, &c.replaced_connections),
        ] {
            gauge.set(i64::try_from(counter.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }
        metrics
            .p2p_queued_bytes
            .set(i64::try_from(endpoint.queued_bytes()).unwrap_or(i64::MAX));
        metrics.mempool_size.set(mempool.lock().len() as i64);
        match store.disk_usage() {
            Ok(usage) => {
                for (column, bytes) in usage {
                    metrics
                        .disk_bytes
                        .with_label_values(&[column])
                        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read disk usage"),
        }
    }
}
