//! Recovery of a validator that fell far behind, with real `keel run` processes on loopback:
//! a validator stopped while the others commit thousands of blocks under load restarts,
//! catches up by committed-range sync (its metrics show how much of the gap it filled;
//! consensus's block fetching may fill the rest),
//! reaches the same state root at the same height as the others, and serves the receipts of
//! transactions committed while it was down.

mod common;

use common::{ACCOUNTS, Committee, SERIAL, roots_at, submit_spread, transfers};
use std::time::{Duration, Instant};

/// Blocks the others commit while validator 3 is down (`KEEL_SYNC_TEST_BLOCKS` overrides).
const DEFAULT_MISSED_BLOCKS: u64 = 1_000;

fn committed_height(c: &Committee, i: usize) -> u64 {
    c.status(i)["committed_height"].as_u64().unwrap()
}

#[test]
fn a_validator_far_behind_catches_up_by_range_sync() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let missed: u64 =
        keel_types::test_utils::env_knob("KEEL_SYNC_TEST_BLOCKS").unwrap_or(DEFAULT_MISSED_BLOCKS);
    let mut c = Committee::create(4);
    // No idle wait: with one validator down (leader reputation soon passes it over) the
    // others still commit thousands of heights in a minute or two.
    for i in 0..4 {
        c.edit_config(i, &[("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n")]);
    }
    for i in 0..4 {
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let first = transfers(ACCOUNTS, 0, 2);
    submit_spread(&c, &[0, 1, 2, 3], &first);
    c.wait_for(Duration::from_secs(60), "the first load to execute", || {
        (0..4).all(|i| c.executed_transactions(i) >= first.len() as u64)
    });

    c.sigkill(3);
    let stopped_at = committed_height(&c, 0);
    let started = Instant::now();
    // Load while it is down: transfers in waves, each account's in nonce order.
    let mut nonce = 2;
    let mut load = Vec::new();
    while committed_height(&c, 0) < stopped_at + missed {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the committee did not commit {missed} blocks in time"
        );
        let wave = transfers(ACCOUNTS, nonce, 2);
        nonce += 2;
        submit_spread(&c, &[0, 1, 2], &wave);
        load.extend(wave);
        std::thread::sleep(Duration::from_millis(1_000));
    }
    let down_secs = started.elapsed().as_secs_f64();
    let live_rate = (committed_height(&c, 0) - stopped_at) as f64 / down_secs;
    eprintln!(
        "{} blocks committed in {down_secs:.1} s without validator 3 ({live_rate:.1} blocks/s), \
         {} transfers submitted",
        committed_height(&c, 0) - stopped_at,
        load.len()
    );
    // Let the load drain: the others' executed transaction count stops moving.
    let mut last = (0, Instant::now());
    c.wait_for(
        Duration::from_secs(60),
        "the others to drain the load",
        || {
            let now = c.executed_transactions(0);
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() > Duration::from_secs(3)
        },
    );
    let total = last.0;
    assert!(total > first.len() as u64, "the load executed nothing");

    // Restart: range sync brings it to the others' height.
    let behind = committed_height(&c, 0) - stopped_at;
    let restarted = Instant::now();
    c.spawn(3);
    let target = committed_height(&c, 0);
    let mut committed_after = None;
    c.wait_for(
        Duration::from_secs(120),
        "validator 3 to commit and execute the missed heights",
        || {
            let Ok(r) = c.http.get(format!("{}/v1/status", c.apis[3])).send() else {
                return false;
            };
            let Ok(s) = r.json::<serde_json::Value>() else {
                return false;
            };
            if committed_after.is_none() && s["committed_height"].as_u64().unwrap_or(0) >= target {
                committed_after = Some(restarted.elapsed().as_secs_f64());
            }
            s["sync"]["state"] == "following"
                && s["executed_height"].as_u64().unwrap_or(0) >= target
        },
    );
    let executed_after = restarted.elapsed().as_secs_f64();
    let committed_after = committed_after.unwrap_or(executed_after);
    let applied = c.metric(3, "keel_sync_applied_blocks_total").unwrap_or(0.0);
    eprintln!(
        "missed {behind} blocks ({live_rate:.1} blocks/s live); after restart: committed them in \
         {committed_after:.1} s ({:.0} blocks/s), executed them in {executed_after:.1} s \
         ({:.0} blocks/s); range sync applied {applied} blocks",
        behind as f64 / committed_after,
        behind as f64 / executed_after,
    );
    // Consensus's own block fetching also fills the gap once it sees the committee's
    // certificates; range sync must have done its part.
    assert!(
        applied >= 1.0,
        "range sync applied none of the {behind} missed blocks"
    );
    c.wait_ready(3, Duration::from_secs(60));

    // Same state at the same height, and the receipts of what was committed while it was down.
    let height = committed_height(&c, 0);
    let roots = roots_at(&c, &[0, 1, 2, 3], height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "the synced validator diverged at {height}: {roots:?}"
    );
    assert!(c.executed_transactions(3) >= total);
    let mut compared = 0;
    for tx in load.iter().step_by(97) {
        let path = format!("/v1/transactions/{}", tx.digest());
        let (code, at_0) = c.get(0, &path);
        if code == 200 && at_0["status"] == "executed" {
            let (code, at_3) = c.get(3, &path);
            assert_eq!(code, 200, "{at_3}");
            assert_eq!(at_3, at_0, "validator 3's receipt differs");
            compared += 1;
        }
    }
    assert!(compared > 0, "no receipt of the load to compare");
}
