//! Pruning in a real committee: four `keel run` processes with a retention of 200 blocks, no
//! idle wait (blocks come as fast as the pacing allows) and a steady load of signed transfers.
//!
//! - the chain runs far past the window (more than 5x `keep_blocks`) while every validator's data
//!   directory stays under a fixed size;
//! - a pruned height answers 410 naming the height and the lowest retained one; a retained
//!   height still answers 200; a transaction executed at a pruned height answers 404 saying it
//!   may have been pruned;
//! - the pruner keeps up: `keel_pruned_height` follows `executed - keep_blocks`, and its speed
//!   (heights pruned per second of pass time) is more than twice the commit rate.
//!
//! `KEEL_TEST_PRUNING=off` runs the same load with pruning disabled, to see the test fail (the
//! data directories outgrow the bound).

mod common;

use common::{ACCOUNTS, Committee, SERIAL, transfers};
use keel_types::SignedTransaction;
use std::{
    path::Path,
    time::{Duration, Instant},
};

const VALIDATORS: usize = 4;
const KEEP_BLOCKS: u64 = 200;
/// How long the load runs.
const LOAD_FOR: Duration = Duration::from_secs(35);
/// Transactions per account per round of load (the mempool takes 64 pending per sender).
const PER_ROUND: u64 = 16;
/// What a validator's data directory may hold while the chain runs, once the window is full.
const MAX_DATA_DIR_BYTES: u64 = 32 << 20;

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sets the test's retention and pacing in every generated config.
fn configure(c: &Committee, pruning: bool) {
    for i in 0..VALIDATORS {
        let path = c.path().join(format!("net/v{i}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut edited = text.replace("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n");
        for (from, to) in [
            (
                "keep_blocks = 100000\n",
                format!("keep_blocks = {KEEP_BLOCKS}\n"),
            ),
            ("interval_ms = 1000\n", "interval_ms = 100\n".into()),
            // Pruning stays below the latest certified checkpoint: certify often, so the
            // window, not the checkpoint interval, decides what is kept.
            ("interval = 1000\n", "interval = 100\n".into()),
            (
                "compact_interval_ms = 600000\n",
                "compact_interval_ms = 2000\n".into(),
            ),
            ("enabled = true\n", format!("enabled = {pruning}\n")),
        ] {
            assert!(edited.contains(from), "the generated config sets `{from}`");
            edited = edited.replace(from, &to);
        }
        assert!(edited.contains("max_idle_wait_ms = 0\n"));
        std::fs::write(&path, edited).unwrap();
    }
}

fn submit_round(c: &Committee, txs: &[SignedTransaction]) {
    // Each account's transactions go to one validator, in nonce order.
    let mut per_node: Vec<Vec<SignedTransaction>> = vec![Vec::new(); VALIDATORS];
    for (i, tx) in txs.iter().enumerate() {
        per_node[(i % ACCOUNTS as usize) % VALIDATORS].push(tx.clone());
    }
    for (node, txs) in per_node.iter().enumerate() {
        let answer = c.submit_batch(node, txs);
        assert_eq!(
            answer["accepted"].as_u64(),
            Some(txs.len() as u64),
            "validator {node}: {}",
            answer["results"][0]
        );
    }
}

fn metric(c: &Committee, i: usize, name: &str) -> f64 {
    c.metric(i, name).unwrap_or(0.0)
}

#[test]
fn data_directories_stay_bounded_while_the_chain_runs_far_past_the_window() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pruning = std::env::var("KEEL_TEST_PRUNING").map_or(true, |v| v != "off");
    let mut c = Committee::create(VALIDATORS);
    configure(&c, pruning);
    for i in 0..VALIDATORS {
        c.spawn(i);
    }
    for i in 0..VALIDATORS {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let data_dir = |i: usize| c.path().join(format!("net/v{i}-data"));

    let first_round = transfers(ACCOUNTS, 0, PER_ROUND);
    let started = Instant::now();
    let start_height = c.executed_height(0);
    let mut submitted = 0u64;
    let mut nonce = 0u64;
    let mut samples: Vec<(f64, u64, Vec<u64>)> = Vec::new();
    while started.elapsed() < LOAD_FOR {
        let round = if nonce == 0 {
            first_round.clone()
        } else {
            transfers(ACCOUNTS, nonce, PER_ROUND)
        };
        submit_round(&c, &round);
        submitted += round.len() as u64;
        nonce += PER_ROUND;
        // At most two rounds in flight per sender, on every validator.
        c.wait_for(
            Duration::from_secs(30),
            "the previous round to execute",
            || {
                (0..VALIDATORS)
                    .all(|i| c.executed_transactions(i) + round.len() as u64 >= submitted)
            },
        );
        let sizes: Vec<u64> = (0..VALIDATORS).map(|i| dir_bytes(&data_dir(i))).collect();
        samples.push((started.elapsed().as_secs_f64(), c.executed_height(0), sizes));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let height = c.executed_height(0);
    let commit_rate = (height - start_height) as f64 / elapsed;
    println!(
        "pruning {}: {submitted} transactions, heights {start_height}..{height} in {elapsed:.1} s \
         ({commit_rate:.1} heights/s)",
        if pruning { "on" } else { "off" }
    );
    for (t, h, sizes) in &samples {
        let mib: Vec<String> = sizes
            .iter()
            .map(|b| format!("{:.1}", *b as f64 / (1 << 20) as f64))
            .collect();
        println!(
            "  t={t:5.1}s height {h:5}  data dirs MiB [{}]",
            mib.join(", ")
        );
    }

    assert!(
        height >= start_height + 5 * KEEP_BLOCKS,
        "the chain ran only to {height} (started at {start_height})"
    );
    // Once the window is full (the chain is past 2x the window), every sample is under the bound.
    let full = samples
        .iter()
        .filter(|(_, h, _)| *h >= 2 * KEEP_BLOCKS)
        .collect::<Vec<_>>();
    assert!(full.len() >= 3, "too few samples past the window");
    for (t, h, sizes) in &full {
        for (i, bytes) in sizes.iter().enumerate() {
            assert!(
                *bytes <= MAX_DATA_DIR_BYTES,
                "validator {i}'s data directory holds {bytes} bytes at t={t:.1}s (height {h}), \
                 over {MAX_DATA_DIR_BYTES}"
            );
        }
    }

    // The pruner follows the chain: at most one pass's worth behind executed - keep_blocks.
    for i in 0..VALIDATORS {
        // Pruned first: executed only grows after it.
        let pruned = metric(&c, i, "keel_pruned_height") as u64;
        let lag = metric(&c, i, "keel_pruner_lag_blocks") as u64;
        let executed = c.executed_height(i);
        println!("  validator {i}: executed {executed}, pruned up to {pruned}, lag {lag}");
        assert!(pruned + KEEP_BLOCKS <= executed, "pruned into the window");
        assert!(
            pruned + KEEP_BLOCKS + 200 >= executed,
            "validator {i} pruned only to {pruned} of {executed}"
        );
    }
    // Its speed, in heights per second of pass time, against the commit rate.
    let heights = metric(&c, 0, "keel_pruned_heights_total");
    let busy = metric(&c, 0, "keel_pruner_pass_seconds_sum");
    let passes = metric(&c, 0, "keel_pruner_pass_seconds_count");
    let receipts = metric(&c, 0, "keel_pruned_receipts_total");
    let compacting = metric(&c, 0, "keel_pruner_compaction_seconds_sum");
    let compactions = metric(&c, 0, "keel_pruner_compaction_seconds_count");
    let speed = heights / busy.max(1e-9);
    println!(
        "  pruner: {heights} heights and {receipts} receipts in {passes} passes, {busy:.3} s \
         deleting: {speed:.0} heights/s against {commit_rate:.1} committed heights/s; \
         {compactions} compactions, {compacting:.3} s"
    );
    assert!(
        speed >= 2.0 * commit_rate,
        "pruner speed {speed:.0} heights/s under twice the commit rate {commit_rate:.1}"
    );

    // A pruned height is gone (410), naming it and the lowest retained height; a retained one
    // is served; a receipt from a pruned height may have been pruned (404 saying so).
    let (code, body) = c.get(1, "/v1/blocks/3");
    assert_eq!(code, 410, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let retained_from = metric(&c, 1, "keel_pruned_height") as u64 + 1;
    assert!(
        message.contains("height 3") && message.contains("keeps heights"),
        "{message}"
    );
    assert_eq!(body["error"]["code"], "gone");
    // Well inside the window: the chain (and the pruner behind it) moves on meanwhile.
    let (code, body) = c.get(
        1,
        &format!("/v1/blocks/{}", retained_from + KEEP_BLOCKS / 2),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = c.get(1, &format!("/v1/transactions/{}", first_round[0].digest()));
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pruned")),
        "{body}"
    );
    // Never existed: still a plain 404.
    let (code, _) = c.get(1, &format!("/v1/blocks/{}", height + 1_000_000));
    assert_eq!(code, 404);

    // A restart resumes from the durable lowest retained height.
    let before = metric(&c, 2, "keel_pruned_height");
    assert!(c.stop(2).success());
    c.spawn(2);
    c.wait_ready(2, Duration::from_secs(60));
    assert!(metric(&c, 2, "keel_pruned_height") >= before);
}
