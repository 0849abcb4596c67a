//! Checkpoint state sync with real processes: a validator whose data directory is deleted, in
//! a committee that pruned the heights it would need, restarts, state-syncs from the latest
//! certified checkpoint (killed once in the middle of it, then restarted: it resumes), range-
//! syncs on, reaches the same state root at the same height as the others, and serves the
//! receipts of transactions committed after the checkpoint.
//!
//! The genesis funds `KEEL_STATE_SYNC_ACCOUNTS` derived accounts (default 100,000) so the
//! state is large enough to kill the sync in its middle; the figures are printed.
//! `KEEL_STATE_SYNC_NO_KILL=1` lets the first sync run whole (to time a full sync).

mod common;

use common::{ACCOUNTS, Committee, SERIAL, roots_at, submit_spread, transfers};
use std::time::{Duration, Instant};

const DEFAULT_ACCOUNTS: u64 = 100_000;

/// Kills the `keel status --watch` child if the test fails before reading it.
struct WatchGuard(Option<std::process::Child>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn committed_height(c: &Committee, i: usize) -> u64 {
    c.status(i)["committed_height"].as_u64().unwrap()
}

/// Waits until validator `i`'s log has `needle` (after `skip` bytes); returns the log length.
fn wait_for_log(c: &Committee, i: usize, needle: &str, skip: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
        if let Some(at) = log.get(skip..).and_then(|l| l.find(needle)) {
            return skip + at + needle.len();
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in validator {i}'s log; tail:\n{}",
            c.log_tail(i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_wiped_validator_state_syncs_from_a_checkpoint_even_when_killed_midway() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let accounts: u64 =
        keel_types::test_utils::env_knob("KEEL_STATE_SYNC_ACCOUNTS").unwrap_or(DEFAULT_ACCOUNTS);
    let derived = format!("state-sync-test:{accounts}:1000");
    let mut c = Committee::create_with(4, &["--derived-accounts", &derived]);
    for i in 0..4 {
        c.edit_config(
            i,
            &[
                ("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n"),
                ("interval = 1000\n", "interval = 100\n"),
                ("keep_blocks = 100000\n", "keep_blocks = 100\n"),
                ("interval_ms = 1000\n", "interval_ms = 200\n"),
                ("state_snapshots = 2\n", "state_snapshots = 20\n"),
                ("chunk_bytes = 4194304\n", "chunk_bytes = 65536\n"),
            ],
        );
    }
    // Validator 3 itself keeps its blocks and receipts: the others' pruning is what sends it
    // to state sync, and the receipts it serves afterwards must not be pruned within seconds.
    c.edit_config(
        3,
        &[
            ("format = \"human\"\n", "format = \"json\"\n"),
            ("keep_blocks = 100\n", "keep_blocks = 100000\n"),
        ],
    );
    for i in 0..4 {
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(600));
    }
    let first = transfers(ACCOUNTS, 0, 2);
    submit_spread(&c, &[0, 1, 2, 3], &first);
    // Past a few checkpoints and the retention window: height 1 is pruned everywhere.
    c.wait_for(
        Duration::from_secs(120),
        "the chain to pass height 400",
        || committed_height(&c, 0) > 400,
    );
    c.wait_for(
        Duration::from_secs(60),
        "the others to prune height 1",
        || (0..3).all(|i| c.metric(i, "keel_pruned_height").unwrap_or(0.0) >= 1.0),
    );

    // Wipe validator 3 and restart it; kill it once in the middle of the state sync.
    c.sigkill(3);
    std::fs::remove_dir_all(c.path().join("net/v3-data")).unwrap();
    let log_start = std::fs::metadata(c.log_path(3)).unwrap().len() as usize;
    let started = Instant::now();
    c.spawn(3);
    wait_for_log(
        &c,
        3,
        "state sync from a certified checkpoint starts",
        log_start,
        // Deriving a large genesis's accounts comes first.
        Duration::from_secs(600),
    );
    let at = wait_for_log(
        &c,
        3,
        "state sync progress",
        log_start,
        Duration::from_secs(60),
    );
    if std::env::var_os("KEEL_STATE_SYNC_NO_KILL").is_some() {
        wait_for_log(
            &c,
            3,
            "installed the checkpoint",
            at,
            Duration::from_secs(600),
        );
        c.wait_ready(3, Duration::from_secs(600));
        eprintln!(
            "{accounts} accounts: a full state sync took {:?} s",
            c.metric(3, "keel_state_sync_seconds")
        );
        let log = std::fs::read_to_string(c.log_path(3)).unwrap();
        for line in log[log_start..]
            .lines()
            .filter(|l| l.contains("state sync progress") || l.contains("every bucket"))
        {
            eprintln!("  {}", &line[..line.len().min(260)]);
        }
        return;
    }
    c.sigkill(3);
    let log = std::fs::read_to_string(c.log_path(3)).unwrap();
    assert!(
        !log[log_start..].contains("installed the checkpoint"),
        "the sync finished before it could be killed: raise KEEL_STATE_SYNC_ACCOUNTS"
    );
    c.spawn(3);
    // What an operator watches: `keel status --watch` until the node follows (its lines, as
    // stdout is not a terminal).
    let mut watch = WatchGuard(Some(
        std::process::Command::new(common::keel())
            .args([
                "status",
                "--api",
                &c.apis[3],
                "--watch",
                "--until-following",
            ])
            .args(["--interval-ms", "100", "--timeout", "300"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // The API is up during the state sync: it reports it, and /readyz is not ready.
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.is_none() && Instant::now() < deadline {
        if let Ok(r) = c.http.get(format!("{}/v1/status", c.apis[3])).send()
            && let Ok(v) = r.json::<serde_json::Value>()
            && v["sync"]["state"] == "state_sync"
        {
            let ready = c.http.get(format!("{}/readyz", c.apis[3])).send().unwrap();
            seen = Some((v["sync"].clone(), ready.status().as_u16()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (sync, readyz) = seen.expect("/v1/status never showed the state sync");
    eprintln!("during the state sync: /v1/status sync = {sync}, /readyz = {readyz}");
    assert_eq!(readyz, 503);
    let done = wait_for_log(
        &c,
        3,
        "installed the checkpoint's state",
        at,
        Duration::from_secs(120),
    );
    c.wait_ready(3, Duration::from_secs(120));
    let total_secs = started.elapsed().as_secs_f64();
    let watched = watch.0.take().unwrap().wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.status.success(),
        "keel status --watch: {}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        lines.contains("state sync to the checkpoint at height"),
        "--watch never showed the state sync:\n{lines}"
    );
    assert!(
        lines
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("following: "),
        "--watch did not end on following:\n{lines}"
    );
    let log = std::fs::read_to_string(c.log_path(3)).unwrap();
    let proven: serde_json::Value = log[at..done]
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "every bucket proven")
        .expect("the second run proved every bucket");
    let resumed = proven["fields"]["resumed_buckets"].as_u64().unwrap();
    eprintln!(
        "{accounts} accounts: wiped validator ready {total_secs:.1} s after its first restart; \
         the resumed state sync took {:?} s, {resumed} of 256 buckets kept from before the kill",
        c.metric(3, "keel_state_sync_seconds")
    );
    for line in log[log_start..].lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let m = v["fields"]["message"].as_str().unwrap_or_default();
            if m.contains("state sync") || m.contains("starting") || m.contains("range sync") {
                eprintln!("  {} {m}", v["timestamp"].as_str().unwrap_or_default());
            }
        }
    }
    assert!(resumed > 0, "the second run resumed nothing");

    // Transactions after the checkpoint: executed and served by the synced validator.
    let later = transfers(ACCOUNTS, 2, 1);
    submit_spread(&c, &[0, 1, 2], &later);
    c.wait_for(
        Duration::from_secs(60),
        "validator 3 to execute the new load",
        || {
            let (code, v) = c.get(
                3,
                &format!("/v1/transactions/{}", later[later.len() - 1].digest()),
            );
            code == 200 && v["status"] == "executed"
        },
    );
    let height = committed_height(&c, 0);
    let roots = roots_at(&c, &[0, 1, 2, 3], height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "the state-synced validator diverged at {height}: {roots:?}"
    );
    for tx in later.iter().step_by(13) {
        let path = format!("/v1/transactions/{}", tx.digest());
        let (code, at_0) = c.get(0, &path);
        assert_eq!(code, 200);
        let (code, at_3) = c.get(3, &path);
        assert_eq!(code, 200, "{at_3}");
        assert_eq!(at_3, at_0);
    }
    // Below the checkpoint it holds nothing, and says so.
    let (code, v) = c.get(3, "/v1/blocks/1");
    assert_eq!(code, 410, "{v}");
}
