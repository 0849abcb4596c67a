//! Liveness with a crashed validator, with real processes on loopback: one of four validators
//! SIGKILLed costs the others little (leader reputation passes it over, votes that come with
//! timeouts keep the round before its turns, timeouts adapt), a load of 1,000 transfers/s is
//! still committed quickly, and once restarted it is back at once and leads again.
//!
//! Block rates are those of an idle chain (the leader's payload wait paces it), measured on
//! validator 0 over 10 s windows. Figures are printed (`--nocapture`).

mod common;

use common::{Committee, SERIAL, keel};
use std::{
    process::Command,
    time::{Duration, Instant},
};

const SEED: &str = "liveness-test";
const ACCOUNTS: u64 = 2_000;
const WINDOW: Duration = Duration::from_secs(10);

fn committed(c: &Committee, i: usize) -> u64 {
    c.status(i)["committed_height"].as_u64().unwrap()
}

/// Blocks per second validator `i` commits over `window`.
fn block_rate(c: &Committee, i: usize, window: Duration) -> f64 {
    let (h0, t0) = (committed(c, i), Instant::now());
    std::thread::sleep(window);
    (committed(c, i) - h0) as f64 / t0.elapsed().as_secs_f64()
}

/// Blocks validator `v` led that validator 0 committed.
fn led(c: &Committee, v: usize) -> f64 {
    c.metric(
        0,
        &format!("keel_consensus_leader_rounds_total{{outcome=\"succeeded\",validator=\"{v}\"}}"),
    )
    .unwrap_or(0.0)
}

/// `keel bench` at `rate` transfers/s for `secs` against `nodes`: its report line.
fn bench(c: &Committee, nodes: &[usize], rate: u64, secs: u64) -> String {
    let mut args = vec![
        "bench".to_string(),
        "--seed".into(),
        SEED.into(),
        "--accounts".into(),
        ACCOUNTS.to_string(),
        "--duration".into(),
        secs.to_string(),
        "--rate".into(),
        rate.to_string(),
    ];
    for i in nodes {
        args.push("--api".into());
        args.push(c.apis[*i].clone());
    }
    let out = Command::new(keel()).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "keel bench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().to_string()
}

/// The value of `field=` in a bench report line.
fn field(report: &str, name: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in `{report}`"))
}

#[test]
fn one_crashed_validator_costs_the_others_little_and_it_returns_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let derived = format!("{SEED}:{ACCOUNTS}:1000000000");
    let mut c = Committee::create_with(4, &["--derived-accounts", &derived]);
    for i in 0..4 {
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_secs(3));
    let healthy = block_rate(&c, 0, WINDOW);

    c.sigkill(3);
    // A few of its turns fail before the committed history shows it (its failures must be
    // committed and `exclude_rounds` rounds old); the rate is measured after that.
    std::thread::sleep(Duration::from_secs(5));
    let one_down = block_rate(&c, 0, WINDOW);
    let loaded = bench(&c, &[0, 1, 2], 1_000, 10);
    println!(
        "healthy {healthy:.1} blocks/s; validator 3 SIGKILLed: {one_down:.1} blocks/s; 1,000 transfers/s: {loaded}"
    );
    assert!(
        one_down >= 0.5 * healthy,
        "{one_down:.1} blocks/s with one validator down, {healthy:.1} healthy"
    );
    assert_eq!(
        field(&loaded, "committed"),
        field(&loaded, "submitted"),
        "{loaded}"
    );
    assert!(field(&loaded, "p50_ms") <= 300, "{loaded}");

    let led_before = led(&c, 3);
    c.spawn(3);
    let restarted = Instant::now();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(restarted.elapsed()));
    let back = block_rate(&c, 0, WINDOW);
    println!("from 5 s after the restart: {back:.1} blocks/s");
    assert!(
        back >= 0.8 * healthy,
        "{back:.1} blocks/s from 5 s after the restart, {healthy:.1} healthy"
    );
    c.wait_for(
        Duration::from_secs(60),
        "the restarted validator to lead a committed block",
        || led(&c, 3) > led_before,
    );
    println!(
        "validator 3 led again {:.1} s after its restart",
        restarted.elapsed().as_secs_f64()
    );
}

/// An accepted transaction never vanishes: with two of four validators down, validator 0
/// admits transfers and seals them into a batch that no block can order (no quorum) before it
/// expires (batch lifetime 2 s here). Once the two are back and the chain passes the expiry,
/// the batch is deleted and its transactions are admitted again, batched anew and committed.
#[test]
fn transactions_of_a_batch_that_expired_unordered_are_admitted_again_and_committed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Committee::create(4);
    for i in 0..4 {
        c.edit_config(i, &[("lifetime_ms = 60000\n", "lifetime_ms = 2000\n")]);
    }
    for i in 0..4 {
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    c.sigkill(2);
    c.sigkill(3);
    let txs = common::transfers(8, 0, 1);
    let answer = c.submit_batch(0, &txs);
    assert_eq!(answer["accepted"], 8, "{answer}");
    // Longer than the batch lifetime without a commit.
    std::thread::sleep(Duration::from_secs(4));
    let (_, first) = c.get(0, &format!("/v1/transactions/{}", txs[0].digest()));
    assert_eq!(first["status"], "pending", "{first}");
    c.spawn(2);
    c.spawn(3);
    c.wait_for(
        Duration::from_secs(90),
        "every transfer to be committed",
        || {
            txs.iter().all(|tx| {
                let (_, v) = c.get(0, &format!("/v1/transactions/{}", tx.digest()));
                v["receipt"]["status"] == "success"
            })
        },
    );
    let readmitted = c.metric(0, "keel_mempool_readmitted_total").unwrap_or(0.0);
    let expired = c.metric(0, "keel_batches_expired_total").unwrap_or(0.0);
    println!("readmitted {readmitted}, batches expired {expired}");
    assert!(readmitted >= 8.0, "readmitted {readmitted}");
}
