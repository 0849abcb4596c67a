//! A peer that lies to a syncing validator: four `keel run` processes, validator 3 started
//! with the debug-build fault `KEEL_FAULT_LIE_IN_SYNC` (see `node/src/faults.rs`): it takes
//! part in consensus honestly but answers every sync request with corrupted data — state
//! chunks with every value altered (keys still in order and in their bucket, so only the
//! bucket checksum against the certified root catches it) and committed ranges with two blocks
//! swapped (a broken hash chain).
//!
//! Validator 2 is wiped and restarted: it must state-sync from a certified checkpoint and
//! range-sync on with the liar among the peers it asks, drop the liar, and reach the same
//! state root as the others.

mod common;

use common::{ACCOUNTS, Committee, SERIAL, roots_at, submit_spread, transfers};
use std::time::Duration;

const LIAR: usize = 3;
const WIPED: usize = 2;

#[test]
fn a_syncing_validator_drops_a_lying_peer_and_syncs_from_the_others() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Committee::create_with(4, &["--derived-accounts", "lying-peer-test:20000:1000"]);
    for i in 0..4 {
        c.edit_config(
            i,
            &[
                ("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n"),
                ("interval = 1000\n", "interval = 200\n"),
                ("keep_blocks = 100000\n", "keep_blocks = 100\n"),
                ("interval_ms = 1000\n", "interval_ms = 200\n"),
                ("state_snapshots = 2\n", "state_snapshots = 20\n"),
                ("chunk_bytes = 4194304\n", "chunk_bytes = 16384\n"),
                // Range sync runs for a short gap too, in short ranges spread over every peer
                // (so the liar is asked), and drops a peer at its first bad range.
                ("trigger_gap = 64\n", "trigger_gap = 20\n"),
                ("chunk_blocks = 128\n", "chunk_blocks = 10\n"),
                ("max_strikes = 3\n", "max_strikes = 1\n"),
                ("max_strikes = 2\n", "max_strikes = 1\n"),
            ],
        );
    }
    for i in 0..4 {
        if i == LIAR {
            c.spawn_with_env(i, &[("KEEL_FAULT_LIE_IN_SYNC", "1")]);
        } else {
            c.spawn(i);
        }
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(120));
    }
    let liar_log = std::fs::read_to_string(c.log_path(LIAR)).unwrap();
    assert!(
        liar_log.contains("test fault on"),
        "validator {LIAR} does not lie (a release build ignores the fault)"
    );
    let first = transfers(ACCOUNTS, 0, 2);
    submit_spread(&c, &[0, 1, 2, 3], &first);
    // Past a checkpoint and the retention window, and well into the next interval, so the
    // wiped validator state-syncs and then has heights to range-sync.
    c.wait_for(
        Duration::from_secs(180),
        "the chain to pass height 300",
        || c.status(0)["committed_height"].as_u64().unwrap() > 300,
    );
    c.wait_for(
        Duration::from_secs(60),
        "the others to prune height 1",
        || {
            [0, 1, 3]
                .iter()
                .all(|i| c.metric(*i, "keel_pruned_height").unwrap_or(0.0) >= 1.0)
        },
    );

    c.sigkill(WIPED);
    std::fs::remove_dir_all(c.path().join(format!("net/v{WIPED}-data"))).unwrap();
    c.spawn(WIPED);
    c.wait_ready(WIPED, Duration::from_secs(180));
    let height = c.status(0)["committed_height"].as_u64().unwrap() + 20;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..4).any(|i| c.executed_height(i) < height) {
        assert!(
            std::time::Instant::now() < deadline,
            "height {height} not reached: {:?}; validator {WIPED}'s log:\n{}",
            (0..4).map(|i| c.executed_height(i)).collect::<Vec<_>>(),
            c.log_tail(WIPED)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let roots = roots_at(&c, &[0, 1, 2, 3], height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "validator {WIPED} diverged at {height}: {roots:?}"
    );
    let log = std::fs::read_to_string(c.log_path(WIPED)).unwrap();
    assert!(
        log.contains("state sync installed the checkpoint's state"),
        "validator {WIPED} did not state-sync"
    );
    assert!(
        log.contains("peer served bad state; not asked again in this sync"),
        "the liar was not dropped from the state sync; log:\n{}\nthe liar's log:\n{}",
        c.log_tail(WIPED),
        c.log_tail(LIAR)
    );
    let ranged = log.contains("range sync starts");
    let range_lie_caught = log.contains("peer sent a bad range");
    eprintln!(
        "validator {WIPED}: range sync ran: {ranged}; the liar dropped from it: {range_lie_caught}; \
         peers dropped: {:?}",
        c.metric(WIPED, "keel_sync_peers_dropped_total")
    );
    // Range sync asks the liar only if it picks it for a range of more than three blocks
    // (shorter answers are not corrupted), which a short sync need not do: the refusal of a
    // broken range is asserted by keel-p2p's range sync tests, and here the synced state
    // equals the others' (above) whoever was asked.
    if ranged && !range_lie_caught {
        eprintln!("validator {WIPED}: range sync did not ask the liar for a long range");
    }
}
