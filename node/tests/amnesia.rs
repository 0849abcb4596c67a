//! The amnesia guard with real processes: a validator whose data directory is deleted and
//! which is restarted at once signs no vote that conflicts with one it signed before the wipe.
//! Every vote it signs is logged (`keel::signed` at debug, JSON logs), and its votes from both
//! lifetimes are compared: at most one block per round, and every vote after the wipe is in a
//! round above every vote before it.

mod common;

use common::{Committee, SERIAL};
use std::{collections::BTreeMap, time::Duration};

/// `(round, block)` of every vote validator `i`'s log records, in log order, split by the
/// `starting` line of each lifetime.
fn signed_votes(c: &Committee, i: usize) -> Vec<Vec<(u64, String)>> {
    let log = std::fs::read_to_string(c.log_path(i)).unwrap();
    let mut lives: Vec<Vec<(u64, String)>> = Vec::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        match fields["message"].as_str() {
            Some("starting") => lives.push(Vec::new()),
            Some("signed vote") => {
                let round = fields["round"].as_u64().unwrap();
                let block = fields["block"].as_str().unwrap().to_string();
                lives
                    .last_mut()
                    .expect("a vote before start")
                    .push((round, block));
            }
            _ => {}
        }
    }
    lives
}

/// Waits until validator 3 has signed in lifetime `n` (a loaded machine can take longer than
/// the test's 3 s to release the amnesia guard); one that never signs fails the assertions.
fn wait_for_a_vote_in_lifetime(c: &Committee, n: usize) {
    c.wait_for(Duration::from_secs(30), "a vote in this lifetime", || {
        signed_votes(c, 3)
            .get(n)
            .is_some_and(|life| !life.is_empty())
    })
}

#[test]
fn a_wiped_validator_restarted_at_once_never_signs_a_conflicting_vote() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Committee::create(4);
    for i in 0..4 {
        c.edit_config(i, &[("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n")]);
    }
    c.edit_config(
        3,
        &[
            ("format = \"human\"\n", "format = \"json\"\n"),
            (
                "filter = \"info\"\n",
                "filter = \"info,keel::signed=debug\"\n",
            ),
        ],
    );
    for i in 0..4 {
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_secs(3));
    wait_for_a_vote_in_lifetime(&c, 0);

    // Wipe and restart at once, three times.
    for n in 1..=3 {
        c.sigkill(3);
        std::fs::remove_dir_all(c.path().join("net/v3-data")).unwrap();
        c.spawn(3);
        c.wait_ready(3, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(3));
        wait_for_a_vote_in_lifetime(&c, n);
    }
    let lives = signed_votes(&c, 3);
    assert_eq!(lives.len(), 4, "four lifetimes");
    for (n, life) in lives.iter().enumerate() {
        assert!(
            !life.is_empty(),
            "validator 3 signed no vote in lifetime {n}; its log ends:\n{}",
            c.log_tail(3)
        );
    }
    let mut by_round: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
    for (round, block) in lives.iter().flatten() {
        by_round.entry(*round).or_default().push(block);
    }
    for (round, blocks) in &by_round {
        assert!(
            blocks.windows(2).all(|w| w[0] == w[1]),
            "validator 3 voted for different blocks in round {round}: {blocks:?}"
        );
    }
    for pair in lives.windows(2) {
        let before = pair[0].iter().map(|v| v.0).max().unwrap();
        let after = pair[1].iter().map(|v| v.0).min().unwrap();
        assert!(
            after > before,
            "a vote in round {after} after a wipe, not above round {before} voted before it"
        );
    }
    let log = std::fs::read_to_string(c.log_path(3)).unwrap();
    assert_eq!(
        log.matches("amnesia guard lifted").count(),
        4,
        "every lifetime started amnesiac and was released by a quorum"
    );
    eprintln!(
        "votes per lifetime: {:?}",
        lives.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // The committee kept committing, the wiped validator with it.
    let height = c.status(0)["committed_height"].as_u64().unwrap();
    c.wait_for(Duration::from_secs(30), "validator 3 to follow", || {
        c.status(3)["committed_height"].as_u64().unwrap() >= height
    });
}
