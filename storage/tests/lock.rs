//! A second process opening a held data directory fails at once with a clear error.

use keel_storage::{Error, Store, StoreConfig};
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const CHILD_ENV: &str = "KEEL_LOCK_CHILD_DIR";

#[test]
#[ignore = "helper process for a_second_process_is_refused"]
fn lock_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    match Store::open(&dir, &StoreConfig::default()) {
        Err(e @ Error::Locked { .. }) => {
            println!("LOCKED: {e}");
        }
        Err(e) => {
            println!("OTHER: {e}");
            std::process::exit(3);
        }
        Ok(_) => {
            println!("OPENED");
            std::process::exit(4);
        }
    }
}

#[test]
fn a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "lock_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Never hang: the child must finish promptly.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("second open hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(status.success(), "child exited {status}: {out}");
    // The harness prints the test name on the same line, before the child's message.
    let line = out
        .lines()
        .find_map(|l| l.split_once("LOCKED: ").map(|(_, msg)| msg))
        .unwrap_or_else(|| panic!("no lock error in {out}"));
    assert!(line.contains(&dir.path().display().to_string()), "{line}");
    assert!(line.contains("in use by another process"), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
}
