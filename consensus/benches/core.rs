//! Benchmark of the consensus core alone: a 4-replica committee in the simulator with
//! zero-latency links, every message signature-verified on receipt, on one thread.
//!
//! Prints rounds/s and committed blocks/s. Run with `cargo bench -p keel-consensus --bench core`;
//! `KEEL_BENCH_ROUNDS` sets the number of rounds (default 5,000).

use keel_consensus::sim::{SimConfig, Simulation};
use std::time::Instant;

fn main() {
    let rounds: u64 = std::env::var("KEEL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    for n in [4usize, 7] {
        let mut config = SimConfig::honest(n, 1);
        config.latency_ms = (0, 0);
        let mut sim = Simulation::new(config);
        let start = Instant::now();
        sim.run_rounds(rounds);
        let elapsed = start.elapsed().as_secs_f64();
        let heights = sim.heights();
        let committed = heights.iter().copied().min().unwrap_or(0);
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        println!(
            "core, {n} replicas, zero latency: {rounds} rounds in {elapsed:.2}s = {:.0} rounds/s, {:.0} committed blocks/s (every replica committed {committed})",
            rounds as f64 / elapsed,
            committed as f64 / elapsed
        );
    }
}
