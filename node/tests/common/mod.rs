//! A committee of real `keel run` processes on loopback, set up through the CLI (`keel keygen`,
//! `keel genesis`), with helpers to load it, kill and restart validators, and query them.

#![allow(dead_code)]

use keel_types::{
    Address, ChainId, Epoch, KeyPair, Nonce, Op, PublicKey, SignedTransaction, Stake, TimestampMs,
    Transaction, ValidatorInfo, test_utils::seeded_key,
};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Tests share the machine's two cores: one committee at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub const CHAIN: u64 = 7;
pub const ACCOUNTS: u64 = 64;

pub fn keel() -> &'static str {
    env!("CARGO_BIN_EXE_keel")
}

fn run_cli(args: &[&str]) {
    let out = Command::new(keel()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "keel {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ports_free(base: u16, n: u16) -> bool {
    (0..n).all(|i| {
        std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", base + 200 + i)).is_ok()
    })
}

/// A key file written by `keel keygen` (hex seed).
pub fn read_key(path: &Path) -> KeyPair {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).unwrap();
    KeyPair::from_seed(&seed)
}

pub fn account_key(i: u64) -> KeyPair {
    seeded_key("integration-account", i)
}

pub fn address(key: &KeyPair) -> Address {
    Address::from_public_key(&key.public())
}

pub struct Committee {
    pub dir: tempfile::TempDir,
    pub apis: Vec<String>,
    pub admin: Vec<String>,
    pub tokens: Vec<String>,
    configs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
    pub http: reqwest::blocking::Client,
}

impl Committee {
    /// Keys, genesis and configs for `n` validators through the CLI; nothing started.
    pub fn create(n: usize) -> Self {
        Self::create_with(n, &[])
    }

    /// [`Committee::create`] with extra `keel genesis` arguments.
    pub fn create_with(n: usize, genesis_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = loop {
            let base = 20_000 + rand_port() % 30_000;
            if ports_free(base, n as u16) {
                break base;
            }
        };
        let mut args: Vec<String> = vec![
            "genesis".into(),
            "--out-dir".into(),
            dir.path().join("net").display().to_string(),
            "--chain-id".into(),
            CHAIN.to_string(),
        ];
        for i in 0..n {
            let keys = dir.path().join(format!("keys-{i}"));
            run_cli(&["keygen", "--out-dir", keys.to_str().unwrap()]);
            args.push("--validator".into());
            args.push(format!(
                "v{i}={}@127.0.0.1:{}",
                keys.display(),
                base + i as u16
            ));
        }
        for a in 0..ACCOUNTS {
            args.push("--account".into());
            args.push(format!("{}:1000000000", address(&account_key(a))));
        }
        let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
        refs.extend_from_slice(genesis_args);
        run_cli(&refs);
        let net = dir.path().join("net");
        let configs = (0..n).map(|i| net.join(format!("v{i}.toml"))).collect();
        let tokens = (0..n)
            .map(|i| {
                std::fs::read_to_string(net.join(format!("v{i}.token")))
                    .unwrap()
                    .trim()
                    .to_string()
            })
            .collect();
        Committee {
            apis: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", base + 100 + i as u16))
                .collect(),
            admin: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", base + 200 + i as u16))
                .collect(),
            tokens,
            configs,
            children: (0..n).map(|_| None).collect(),
            dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    pub fn start(n: usize) -> Self {
        let mut c = Self::create(n);
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i, Duration::from_secs(60));
        }
        c
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("v{i}.log"))
    }

    pub fn spawn(&mut self, i: usize) {
        self.spawn_with_env(i, &[]);
    }

    /// [`Committee::spawn`] with extra environment variables (e.g. a test-only fault).
    pub fn spawn_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let child = Command::new(keel())
            .args(["run", "--config", self.configs[i].to_str().unwrap()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    pub fn sigkill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.children[i].take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "validator {i} did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of validator `i` (running).
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("running").id()
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.children[i] {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn wait_ready(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.apis[i])).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(
                self.is_running(i),
                "validator {i} exited; log:\n{}",
                self.log_tail(i)
            );
            assert!(
                Instant::now() < deadline,
                "validator {i} not ready in time; log:\n{}",
                self.log_tail(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn get(&self, i: usize, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.apis[i]))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn status(&self, i: usize) -> Value {
        let (code, v) = self.get(i, "/v1/status");
        assert_eq!(code, 200, "status of {i}: {v}");
        v
    }

    pub fn executed_height(&self, i: usize) -> u64 {
        self.status(i)["executed_height"].as_u64().unwrap()
    }

    pub fn executed_transactions(&self, i: usize) -> u64 {
        self.status(i)["executed_transactions"].as_u64().unwrap()
    }

    /// Submits a bcs batch to validator `i`, as a well-behaved client does: a 429 (the node's
    /// pipeline is behind: admission control) is retried after a pause, for up to a minute.
    pub fn submit_batch(&self, i: usize, txs: &[SignedTransaction]) -> Value {
        let body = bcs::to_bytes(txs).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .http
                .post(format!("{}/v1/transactions/batch", self.apis[i]))
                .header("content-type", "application/octet-stream")
                .body(body.clone())
                .send()
                .unwrap();
            if r.status().as_u16() == 429 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assert!(r.status().is_success(), "batch submit: {}", r.status());
            return r.json().unwrap();
        }
    }

    /// The value of the sample named `series` (a metric name with its labels, e.g.
    /// `keel_storage_disk_bytes{column="blocks"}`) in validator `i`'s `/metrics`, if present.
    pub fn metric(&self, i: usize, series: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.apis[i]))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits until `cond` holds, polling; panics with `what` after `within`.
    pub fn wait_for(&self, within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The state root each running validator reports for `height` (all must have executed it).
    pub fn root_at(&self, i: usize, height: u64) -> Option<String> {
        let (code, v) = self.get(i, &format!("/v1/blocks/{height}"));
        if code != 200 {
            return None;
        }
        v["state_root"].as_str().map(str::to_string)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The genesis committee, chain id and validator addresses, read back from the file
    /// `keel genesis` wrote.
    pub fn genesis_committee(&self) -> (keel_types::Committee, ChainId, Vec<std::net::SocketAddr>) {
        let text = std::fs::read_to_string(self.path().join("net/genesis.json")).unwrap();
        let g: Value = serde_json::from_str(&text).unwrap();
        let mut validators = Vec::new();
        let mut addresses = Vec::new();
        for v in g["validators"].as_array().unwrap() {
            let key = |field: &str| -> PublicKey { v[field].as_str().unwrap().parse().unwrap() };
            addresses.push(v["address"].as_str().unwrap().parse().unwrap());
            validators.push(ValidatorInfo {
                protocol_key: key("protocol_key"),
                network_key: key("network_key"),
                stake: Stake(v["stake"].as_u64().unwrap()),
                address: v["address"].as_str().unwrap().to_string(),
            });
        }
        let committee =
            keel_types::Committee::new(Epoch(g["epoch"].as_u64().unwrap()), validators).unwrap();
        (
            committee,
            ChainId(g["chain_id"].as_u64().unwrap()),
            addresses,
        )
    }

    /// Keys and a config for one more node, not in genesis (a validator to add): validator
    /// 0's config with its own keys, data directory, free ports and token. Returns its index.
    pub fn add_follower(&mut self) -> usize {
        let i = self.configs.len();
        let keys = self.dir.path().join(format!("keys-{i}"));
        run_cli(&["keygen", "--out-dir", keys.to_str().unwrap()]);
        let base = loop {
            let base = 20_000 + rand_port() % 30_000;
            if ports_free(base, 1) {
                break base;
            }
        };
        let net = self.dir.path().join("net");
        let token = hex::encode(rand::random::<[u8; 24]>());
        std::fs::write(net.join(format!("v{i}.token")), &token).unwrap();
        let mut lines = Vec::new();
        for line in std::fs::read_to_string(&self.configs[0]).unwrap().lines() {
            let key = line.split(" = ").next().unwrap_or_default();
            let quoted = |v: String| format!("{key} = \"{v}\"");
            lines.push(match key {
                "protocol_key" => quoted(keys.join("protocol.key").display().to_string()),
                "network_key" => quoted(keys.join("network.key").display().to_string()),
                "data_dir" => quoted(net.join(format!("v{i}-data")).display().to_string()),
                "p2p_listen" => quoted(format!("127.0.0.1:{base}")),
                "api_listen" => quoted(format!("127.0.0.1:{}", base + 100)),
                "admin_listen" => quoted(format!("127.0.0.1:{}", base + 200)),
                "admin_token_file" => quoted(net.join(format!("v{i}.token")).display().to_string()),
                _ => line.to_string(),
            });
        }
        let config = net.join(format!("v{i}.toml"));
        std::fs::write(&config, lines.join("\n") + "\n").unwrap();
        self.configs.push(config);
        self.children.push(None);
        self.apis.push(format!("http://127.0.0.1:{}", base + 100));
        self.admin.push(format!("http://127.0.0.1:{}", base + 200));
        self.tokens.push(token);
        i
    }

    /// The p2p address in validator `i`'s config.
    pub fn p2p_address(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.configs[i]).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("p2p_listen = "))
            .unwrap();
        line.trim_start_matches("p2p_listen = ")
            .trim_matches('"')
            .to_string()
    }

    /// Rewrites lines of validator `i`'s generated config (`from` must be present: the test
    /// fails loudly if the generated config no longer has the line it means to change).
    pub fn edit_config(&self, i: usize, edits: &[(&str, &str)]) {
        let path = &self.configs[i];
        let mut text = std::fs::read_to_string(path).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "v{i}.toml has no `{from}`");
            text = text.replace(from, to);
        }
        std::fs::write(path, text).unwrap();
    }
}

impl Drop for Committee {
    /// Stops every process; when the test failed, keeps the directory (configs, data, logs) and
    /// says where, so the failure can be read afterwards.
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("the failed test's directory is kept at {}", kept.display());
        }
    }
}

fn rand_port() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (t ^ std::process::id().wrapping_mul(2_654_435_761)) as u16
}

/// Signs transfers: `per_account` from each of `accounts` accounts (nonces from `first_nonce`),
/// account a paying account a+1.
pub fn transfers(accounts: u64, first_nonce: u64, per_account: u64) -> Vec<SignedTransaction> {
    let keys: Vec<KeyPair> = (0..accounts).map(account_key).collect();
    let mut out = Vec::new();
    for nonce in first_nonce..first_nonce + per_account {
        for (a, key) in keys.iter().enumerate() {
            let to = address(&keys[(a + 1) % keys.len()]);
            out.push(
                Transaction {
                    chain_id: ChainId(CHAIN),
                    sender: key.public(),
                    nonce: Nonce(nonce),
                    expiry: TimestampMs(now_ms() + 600_000),
                    ops: vec![Op::Transfer { to, amount: 3 }],
                }
                .sign(key),
            );
        }
    }
    out
}

/// Submits each account's transactions to the same validator (account `a` to `a % n`), in
/// nonce order, in batches of at most 500.
pub fn submit_spread(c: &Committee, nodes: &[usize], txs: &[SignedTransaction]) -> usize {
    let mut per_node: Vec<Vec<SignedTransaction>> = vec![Vec::new(); nodes.len()];
    for (i, tx) in txs.iter().enumerate() {
        let account = i % ACCOUNTS as usize;
        per_node[account % nodes.len()].push(tx.clone());
    }
    let mut accepted = 0;
    for (k, txs) in per_node.iter().enumerate() {
        for chunk in txs.chunks(500) {
            let answer = c.submit_batch(nodes[k], chunk);
            accepted += answer["accepted"].as_u64().unwrap() as usize;
        }
    }
    accepted
}

/// Waits until every listed node has executed `height`, then returns their roots there.
pub fn roots_at(c: &Committee, nodes: &[usize], height: u64) -> Vec<String> {
    c.wait_for(
        Duration::from_secs(60),
        "every node to execute the height",
        || nodes.iter().all(|i| c.executed_height(*i) >= height),
    );
    nodes
        .iter()
        .map(|i| {
            c.root_at(*i, height)
                .unwrap_or_else(|| panic!("node {i} has no root for height {height}"))
        })
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
