//! A second process opening a held data directory fails at once with a clear error.

use keel_storage::{Error, Store, StoreConfig};
use keel_types::test_utils::TestChild;
use std::time::Duration;

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
    let child = TestChild::spawn("lock_child", &[(CHILD_ENV, dir.path())]);
    // Never hang: the child must finish promptly.
    let (status, lines) = child.wait(Duration::from_secs(30));
    let out = lines.join("\n");
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
