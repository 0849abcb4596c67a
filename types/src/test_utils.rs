//! Deterministic fixtures for tests: seeded keys and committees.

use crate::{
    committee::{Committee, ValidatorInfo},
    crypto::KeyPair,
    ids::{Epoch, Stake},
};

/// The key pair derived from `(domain, index)`; the same inputs give the same key.
pub fn seeded_key(domain: &str, index: u64) -> KeyPair {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.as_bytes());
    hasher.update(&index.to_le_bytes());
    KeyPair::from_seed(hasher.finalize().as_bytes())
}

/// A committee of `stakes.len()` validators with seeded keys, and their protocol keys.
pub fn committee_with_stakes(epoch: Epoch, stakes: &[u64]) -> (Committee, Vec<KeyPair>) {
    let keys: Vec<KeyPair> = (0..stakes.len() as u64)
        .map(|i| seeded_key("protocol", i))
        .collect();
    let validators = keys
        .iter()
        .zip(stakes)
        .enumerate()
        .map(|(i, (k, s))| ValidatorInfo {
            protocol_key: k.public(),
            network_key: seeded_key("network", i as u64).public(),
            stake: Stake(*s),
            address: format!("127.0.0.1:{}", 7000 + i),
        })
        .collect();
    // INVARIANT: test fixtures use positive stakes and distinct seeded keys.
    let committee = Committee::new(epoch, validators).expect("INVARIANT: valid test committee");
    (committee, keys)
}

/// A committee of `n` validators with stake 1 each.
pub fn committee(n: usize) -> (Committee, Vec<KeyPair>) {
    committee_with_stakes(Epoch(1), &vec![1; n])
}

/// A copy of the running test binary that runs one `#[ignore]`d helper test, for tests that
/// need a real second process (crash tests that SIGKILL it, lock tests). Its stdout lines are
/// read as they arrive.
pub struct TestChild {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl TestChild {
    /// Runs the ignored test `name` of this test binary with `env` set.
    pub fn spawn(name: &str, env: &[(&str, &std::path::Path)]) -> Self {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("INVARIANT: tests know their binary");
        let mut command = std::process::Command::new(exe);
        command
            .args([
                name,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("INVARIANT: the test binary starts");
        let stdout = child.stdout.take().expect("INVARIANT: stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        TestChild {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for a stdout line containing `needle` (the harness may print the test's name
    /// before the child's first line); panics after `within` or if the child's output ends.
    pub fn wait_for_line(&self, needle: &str, within: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("child never printed `{needle}`: {e}"),
            }
        }
    }

    /// Waits for the child to exit by itself (killing it and panicking after `within`);
    /// returns its status and the lines not read yet.
    pub fn wait(mut self, within: std::time::Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("INVARIANT: the child is ours") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("child did not exit within {within:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        (status, self.rest())
    }

    /// SIGKILLs the child; returns the lines it printed that were not read yet.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.rest()
    }

    fn rest(&mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.lines.try_iter().collect()
    }
}

/// The value of environment variable `name` parsed as `T`, if set and valid (test knobs such
/// as seeds and round counts).
pub fn env_knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}
