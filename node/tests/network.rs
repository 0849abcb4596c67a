//! A real committee: four `keel run` processes on loopback, driven through the public API.
//!
//! - signed transactions submitted through the API commit, every node reaches the same state
//!   root at the same height, and every receipt is queryable on every node;
//! - a SIGKILLed validator does not stop the others, and after a restart catches up to the
//!   same state root;
//! - stopping the current leader again and again forces view changes, and commits continue;
//! - garbage, oversize and unauthenticated requests get 4xx answers and the node keeps serving;
//! - the event stream takes a bounded number of subscribers, and a slot comes back when one
//!   leaves;
//! - `keel localnet` writes `apis.txt` once ready, funds key files with which the README's
//!   first-transactions walkthrough runs verbatim, and stops every validator on SIGTERM;
//!   `keel status` summarises one of its nodes and `keel doctor` checks its config.

mod common;

use common::{ACCOUNTS, Committee, SERIAL, roots_at, submit_spread, transfers};
use std::time::Duration;

#[test]
fn four_validators_commit_signed_transactions_and_agree() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Committee::start(4);
    let txs = transfers(ACCOUNTS, 0, 32);
    assert!(txs.len() >= 2_000);
    let accepted = submit_spread(&c, &[0, 1, 2, 3], &txs);
    assert_eq!(accepted, txs.len(), "every transaction admitted");

    c.wait_for(
        Duration::from_secs(120),
        "2,048 executed transactions",
        || (0..4).all(|i| c.executed_transactions(i) >= txs.len() as u64),
    );
    let height = (0..4).map(|i| c.executed_height(i)).max().unwrap();
    let roots = roots_at(&c, &[0, 1, 2, 3], height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "roots differ at height {height}: {roots:?}"
    );
    // Every receipt, on every node, says success.
    for i in 0..4 {
        for tx in &txs {
            let (code, v) = c.get(i, &format!("/v1/transactions/{}", tx.digest()));
            assert_eq!(code, 200, "node {i}: {v}");
            assert_eq!(v["receipt"]["status"], "success", "node {i}: {v}");
            // `keel genesis`'s default fee: 100 per op, a transfer stores no state.
            assert_eq!(v["receipt"]["fee"], 100, "node {i}: {v}");
        }
    }
    // Balances moved: each account paid 32 x 3 and received the same, and paid 32 fees of 100.
    let (_, account) = c.get(
        2,
        &format!("/v1/accounts/{}", common::address(&common::account_key(5))),
    );
    assert_eq!(account["nonce"], 32);
    assert_eq!(account["balance"], 1_000_000_000u64 - 32 * 100);
    // Disk use per column family is exported, and the columns written to hold bytes.
    c.wait_for(
        Duration::from_secs(10),
        "keel_storage_disk_bytes for blocks and receipts",
        || {
            disk_bytes(&c, 2, "blocks").is_some_and(|b| b > 0.0)
                && disk_bytes(&c, 2, "receipts").is_some_and(|b| b > 0.0)
        },
    );
    assert!(disk_bytes(&c, 2, "state").is_some());
    println!(
        "committed {} transactions; roots agree at height {height}",
        txs.len()
    );
}

#[test]
fn a_killed_validator_does_not_stop_the_others_and_catches_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Committee::start(4);
    let first = transfers(ACCOUNTS, 0, 4);
    submit_spread(&c, &[0, 1, 2, 3], &first);
    c.wait_for(Duration::from_secs(60), "the first load to execute", || {
        c.executed_transactions(0) >= first.len() as u64
    });

    // Kill validator 3 under load; the others keep committing.
    c.sigkill(3);
    let before = c.executed_height(0);
    let second = transfers(ACCOUNTS, 4, 8);
    submit_spread(&c, &[0, 1, 2], &second);
    let total = (first.len() + second.len()) as u64;
    c.wait_for(
        Duration::from_secs(90),
        "the others to execute the load",
        || (0..3).all(|i| c.executed_transactions(i) >= total),
    );
    c.wait_for(
        Duration::from_secs(60),
        "20 more blocks without validator 3",
        || c.executed_height(0) > before + 20,
    );

    // Restart: it catches up by block sync and reaches the same state.
    c.spawn(3);
    c.wait_ready(3, Duration::from_secs(60));
    let height = c.executed_height(0);
    let roots = roots_at(&c, &[0, 1, 2, 3], height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "restarted validator diverged at {height}: {roots:?}"
    );
    assert!(c.executed_transactions(3) >= total);
    let (code, v) = c.get(3, &format!("/v1/transactions/{}", second[7].digest()));
    assert_eq!(code, 200, "{v}");
}

fn disk_bytes(c: &Committee, i: usize, column: &str) -> Option<f64> {
    c.metric(
        i,
        &format!("keel_storage_disk_bytes{{column=\"{column}\"}}"),
    )
}

fn timeouts(c: &Committee, i: usize) -> f64 {
    c.metric(i, "keel_consensus_timeouts_total").unwrap_or(0.0)
}

#[test]
fn stopping_the_leader_again_and_again_forces_view_changes_and_commits_continue() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Round robin, so the stopped leader keeps its turns and each of them is a view change
    // (leader reputation would soon pass it over; tests/liveness.rs covers that).
    let mut c = Committee::create(4);
    for i in 0..4 {
        c.edit_config(
            i,
            &[("kind = \"reputation\"\n", "kind = \"round_robin\"\n")],
        );
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    for _ in 0..3 {
        let round = c.status(0)["round"].as_u64().unwrap();
        // Equal stakes: the leader of round r is validator r mod 4.
        let leader = (round % 4) as usize;
        let observer = (leader + 1) % 4;
        let timeouts_before = timeouts(&c, observer);
        let status = c.stop(leader);
        assert!(
            status.success(),
            "graceful stop of {leader} failed: {status}"
        );
        let h = c.executed_height(observer);
        c.wait_for(
            Duration::from_secs(60),
            "commits without the leader",
            || c.executed_height(observer) >= h + 10,
        );
        // The stopped validator's rounds ended in timeouts: view changes, then commits.
        let timeouts_after = timeouts(&c, observer);
        assert!(
            timeouts_after > timeouts_before,
            "validator {observer} signed no timeout while {leader} was down"
        );
        c.spawn(leader);
        c.wait_ready(leader, Duration::from_secs(60));
    }
    let txs = transfers(ACCOUNTS, 0, 2);
    submit_spread(&c, &[0, 1, 2, 3], &txs);
    c.wait_for(Duration::from_secs(60), "load after the restarts", || {
        (0..4).all(|i| c.executed_transactions(i) >= txs.len() as u64)
    });
}

#[test]
fn bad_requests_get_4xx_and_the_node_keeps_serving() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Committee::start(4);
    let api = &c.apis[0];
    // A fresh connection per request: the server closes a connection whose oversize body it
    // refused without reading, and a pooled client would reuse it.
    let http = &reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let check = |what: &str, r: reqwest::blocking::Response, want: u16| {
        let code = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap_or_default();
        assert_eq!(code, want, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: no error message in {body}"
        );
        body
    };
    let post_json = |body: &str| {
        http.post(format!("{api}/v1/transactions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    check("garbage JSON", post_json("{not json"), 400);
    check("wrong shape", post_json(r#"{"chain_id": "x"}"#), 400);
    let bad_hex = serde_json::json!({
        "chain_id": 7, "sender": "zz", "nonce": 0, "expiry_ms": 1,
        "ops": [], "signature": "00"
    });
    let body = check("bad sender hex", post_json(&bad_hex.to_string()), 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sender")
    );
    // A well-formed but invalid transaction: the message names the field.
    let mut tx = serde_json::to_value(keel_api::dto::TransactionJson::from_signed(
        &transfers(1, 0, 1)[0],
    ))
    .unwrap();
    tx["ops"][0]["amount"] = 0.into();
    let body = check("zero amount", post_json(&tx.to_string()), 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ops[0]"),
        "{body}"
    );
    check(
        "oversize JSON",
        post_json(&format!("{{\"pad\": \"{}\"}}", "a".repeat(1 << 20))),
        413,
    );
    check(
        "garbage batch",
        http.post(format!("{api}/v1/transactions/batch"))
            .body(vec![0xffu8; 100])
            .send()
            .unwrap(),
        400,
    );
    check(
        "oversize batch",
        http.post(format!("{api}/v1/transactions/batch"))
            .body(vec![0u8; 17 << 20])
            .send()
            .unwrap(),
        413,
    );
    check(
        "bad digest",
        http.get(format!("{api}/v1/transactions/xyz"))
            .send()
            .unwrap(),
        400,
    );
    check(
        "unknown digest",
        http.get(format!("{api}/v1/transactions/{}", "ab".repeat(32)))
            .send()
            .unwrap(),
        404,
    );
    check(
        "bad height",
        http.get(format!("{api}/v1/blocks/-1")).send().unwrap(),
        400,
    );
    check(
        "long object key",
        http.get(format!(
            "{api}/v1/objects/{}/{}",
            "00".repeat(32),
            "ab".repeat(300)
        ))
        .send()
        .unwrap(),
        400,
    );
    check(
        "unknown path",
        http.get(format!("{api}/v2/nothing")).send().unwrap(),
        404,
    );

    let admin = &c.admin[0];
    check(
        "admin without token",
        http.get(format!("{admin}/admin/status")).send().unwrap(),
        401,
    );
    check(
        "admin with a wrong token",
        http.get(format!("{admin}/admin/status"))
            .bearer_auth("not-the-token")
            .send()
            .unwrap(),
        401,
    );
    check(
        "bad log filter",
        http.put(format!("{admin}/admin/log-level"))
            .bearer_auth(&c.tokens[0])
            .json(&serde_json::json!({"filter": "keel=notalevel[["}))
            .send()
            .unwrap(),
        400,
    );
    let ok = http
        .get(format!("{admin}/admin/peers"))
        .bearer_auth(&c.tokens[0])
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let peers: serde_json::Value = ok.json().unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 3);

    // Still serving, and the OpenAPI document is there.
    assert_eq!(
        http.get(format!("{api}/healthz")).send().unwrap().status(),
        200
    );
    assert_eq!(c.get(0, "/v1/openapi.json").0, 200);
    let h = c.executed_height(0);
    c.wait_for(
        Duration::from_secs(30),
        "commits after bad requests",
        || c.executed_height(0) > h,
    );
}

#[test]
fn localnet_writes_apis_and_funded_keys_once_ready_and_stops_on_sigterm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut guard = StopOnDrop(
        std::process::Command::new(common::keel())
            .args(["localnet", "--validators", "4", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let apis_path = dir.path().join("apis.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !apis_path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "apis.txt never appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "localnet exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let apis: Vec<String> = std::fs::read_to_string(&apis_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(apis.len(), 4);
    for api in &apis {
        let r = reqwest::blocking::get(format!("{api}/readyz")).unwrap();
        assert!(r.status().is_success(), "{api} not ready");
    }
    run_readme_walkthrough(dir.path());
    check_status_and_doctor(dir.path(), &apis[0]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "localnet did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "localnet exit: {status}");
    // Every validator is gone: its API no longer answers, and its data directory can be
    // opened again (the lock was released).
    for api in &apis {
        assert!(reqwest::blocking::get(format!("{api}/healthz")).is_err());
    }
}

/// Runs `keel ARGS…`: whether it exited 0, its stdout and its stderr.
fn keel_cli<I, A>(args: I) -> (bool, String, String)
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(common::keel())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stops a `keel localnet` if the test fails before it does (SIGTERM stops its validators;
/// SIGKILL after 30 s), so a failed run leaves no processes behind.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the README's first-transactions walkthrough exactly as written (the lines between its
/// `walkthrough:begin` and `walkthrough:end` markers) from a directory laid out like the
/// checkout: `target/release/keel` is this build's binary and `localnet` the running localnet.
fn run_readme_walkthrough(localnet: &std::path::Path) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = readme
        .split("<!-- walkthrough:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- walkthrough:end -->").next())
        .expect("README has the walkthrough markers");
    let script = block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the walkthrough is one sh code block");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(common::keel(), work.path().join("target/release/keel")).unwrap();
    std::os::unix::fs::symlink(localnet, work.path().join("localnet")).unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "walkthrough failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Both transactions succeeded, the recipient holds the transfer, the object reads back.
    assert_eq!(
        stdout.matches(r#""status": "success""#).count(),
        2,
        "{stdout}"
    );
    let funded = 1_000_000_000u64 + 1_000;
    assert!(
        stdout.contains(&format!(r#""balance": {funded}"#)),
        "{stdout}"
    );
    assert!(stdout.contains(r#""text": "hello""#), "{stdout}");

    // `--wait` on a transfer beyond the balance: the receipt is printed and the exit is not 0.
    let api = std::fs::read_to_string(localnet.join("apis.txt")).unwrap();
    let to = std::fs::read_to_string(localnet.join("accounts/account-1.address")).unwrap();
    let key = localnet.join("accounts/account-2.key");
    let api = api.lines().next().unwrap();
    let (ok, stdout, stderr) = keel_cli([
        "tx".as_ref(),
        "--api".as_ref(),
        api.as_ref(),
        "transfer".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--to".as_ref(),
        to.trim().as_ref(),
        "--amount".as_ref(),
        "2000000000".as_ref(),
        "--wait".as_ref(),
    ]);
    assert!(!ok, "an overdraft exited 0: {stderr}");
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(
        stdout.contains(r#""status": "failed""#),
        "the failed receipt is printed: {stdout}"
    );
}

/// `keel status` summarises a live node; `keel doctor` passes on a running validator's config
/// (its ports are held by itself, its peers' clocks agree) and fails, naming the fix, on a key
/// file others can read.
fn check_status_and_doctor(localnet: &std::path::Path, api: &str) {
    let (ok, text, stderr) = keel_cli(["status", "--api", api]);
    assert!(ok, "keel status: {text}{stderr}");
    assert!(text.contains("validator 0, following"), "{text}");
    assert!(text.contains("4 members, 3 of 3 peers connected"), "{text}");

    let config = localnet.join("validator-0.toml");
    let doctor = || keel_cli(["doctor".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let (ok, text, stderr) = doctor();
    assert!(ok, "keel doctor: {text}{stderr}");
    assert!(text.contains("ok    api_listen"), "{text}");
    assert_eq!(text.matches("ok    clock vs").count(), 3, "{text}");

    use std::os::unix::fs::PermissionsExt;
    let key = localnet.join("keys/validator-0/protocol.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text, _) = doctor();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!ok, "a world-readable key passed: {text}");
    assert!(
        text.contains("FAIL  protocol key") && text.contains("chmod 600"),
        "{text}"
    );
}

/// The event stream takes at most `limits.stream_subscribers` subscribers: one more is refused
/// with 429 and a message naming the limit, and a slot comes back when a subscriber leaves.
#[test]
fn event_stream_subscribers_are_capped_and_slots_come_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Committee::create(4);
    for i in 0..4 {
        c.edit_config(i, &[("stream_subscribers = 256", "stream_subscribers = 2")]);
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let open = || http.get(format!("{}/v1/stream", c.apis[0])).send().unwrap();
    let first = open();
    let second = open();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open();
    assert_eq!(third.status().as_u16(), 429);
    let body: serde_json::Value = third.json().unwrap();
    assert!(
        body.to_string().contains("stream_subscribers"),
        "the refusal names the limit: {body}"
    );
    drop(first);
    // The server gives the slot back once it notices the client left (at its next write:
    // transactions keep events flowing).
    let mut nonce = 0;
    c.wait_for(Duration::from_secs(60), "a slot to come back", || {
        submit_spread(&c, &[0], &transfers(ACCOUNTS, nonce, 1));
        nonce += 1;
        open().status().as_u16() == 200
    });
    drop(second);
}
