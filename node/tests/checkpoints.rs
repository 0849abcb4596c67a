//! Certified checkpoints on a real committee: four `keel run` processes on loopback with a
//! checkpoint every 5 blocks and no idle wait (blocks come fast), under a little load.
//!
//! - every validator certifies the same checkpoints, chained by their previous digests;
//! - `/v1/checkpoints/latest` answers a certificate that verifies against the genesis
//!   committee, and its state root is the root every validator executed at that height;
//! - `/v1/status` and the metrics report it; absent and malformed sequences get 404 and 400;
//! - a validator stopped for longer than its signature window reads its certified checkpoints
//!   back after a restart and catches up with the others' certified checkpoints.

mod common;

use common::{ACCOUNTS, Committee, SERIAL, transfers};
use keel_types::CertifiedCheckpoint;
use serde_json::Value;
use std::time::Duration;

/// Small, because a committee with one validator down commits only about a block a second.
const INTERVAL: u64 = 5;
/// Validator 2 keeps peers' signatures only one checkpoint around its own.
const STOPPED: usize = 2;

fn latest_sequence(c: &Committee, i: usize) -> u64 {
    c.status(i)["latest_checkpoint"]["sequence"]
        .as_u64()
        .unwrap_or(0)
}

fn checkpoint(c: &Committee, i: usize, which: &str) -> Value {
    let (code, v) = c.get(i, &format!("/v1/checkpoints/{which}"));
    assert_eq!(code, 200, "validator {i}, checkpoint {which}: {v}");
    v
}

fn certificate(v: &Value) -> CertifiedCheckpoint {
    let bytes = hex::decode(v["certificate"].as_str().unwrap()).unwrap();
    bcs::from_bytes(&bytes).unwrap()
}

#[test]
fn validators_certify_the_same_checkpoints_and_serve_verifiable_certificates() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Committee::create(4);
    c.edit_config(STOPPED, &[("\nwindow = 4\n", "\nwindow = 1\n")]);
    for i in 0..4 {
        c.edit_config(
            i,
            &[
                ("\ninterval = 1000\n", &format!("\ninterval = {INTERVAL}\n")),
                ("max_idle_wait_ms = 400\n", "max_idle_wait_ms = 0\n"),
                (
                    "checkpoint_rebroadcast_ms = 5000\n",
                    "checkpoint_rebroadcast_ms = 500\n",
                ),
            ],
        );
    }
    for i in 0..4 {
        c.spawn(i);
    }
    for i in 0..4 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let (committee, chain_id, _) = c.genesis_committee();
    // Some load, so that the roots move between checkpoints.
    let txs = transfers(ACCOUNTS, 0, 4);
    assert_eq!(c.submit_batch(0, &txs)["accepted"], txs.len());
    c.wait_for(
        Duration::from_secs(30),
        "three certified checkpoints everywhere",
        || (0..4).all(|i| latest_sequence(&c, i) >= 3),
    );

    // The same chain of checkpoints on every validator.
    let mut previous: Option<String> = None;
    for sequence in 1..=3u64 {
        let answers: Vec<Value> = (0..4)
            .map(|i| checkpoint(&c, i, &sequence.to_string()))
            .collect();
        for a in &answers {
            assert_eq!(a["sequence"], sequence);
            assert_eq!(a["height"], sequence * INTERVAL);
            assert_eq!(a["digest"], answers[0]["digest"], "{answers:?}");
            assert_eq!(a["state_root"], answers[0]["state_root"]);
            if let Some(p) = &previous {
                assert_eq!(a["previous"].as_str(), Some(p.as_str()));
            }
            certificate(a).verify(&committee, chain_id).unwrap();
        }
        previous = answers[0]["digest"].as_str().map(str::to_string);
    }

    // The latest certificate verifies, and its root is what every validator executed there.
    for i in 0..4 {
        let latest = checkpoint(&c, i, "latest");
        let certified = certificate(&latest);
        certified.verify(&committee, chain_id).unwrap();
        let cp = &certified.checkpoint;
        assert_eq!(cp.digest().to_string(), latest["digest"]);
        c.wait_for(
            Duration::from_secs(30),
            "every validator to execute it",
            || (0..4).all(|j| c.executed_height(j) >= cp.last_height.0),
        );
        for j in 0..4 {
            assert_eq!(
                c.root_at(j, cp.last_height.0),
                Some(cp.state_root.to_string()),
                "validator {j}'s root at height {} vs validator {i}'s checkpoint {}",
                cp.last_height,
                cp.sequence
            );
        }
        assert!(c.metric(i, "keel_checkpoint_certified_sequence").unwrap() >= 3.0);
        // A validator whose peers certified a checkpoint first signs it once it executes it.
        c.wait_for(
            Duration::from_secs(10),
            "each validator to sign three checkpoints",
            || {
                c.metric(i, "keel_checkpoint_signed_sequence")
                    .unwrap_or(0.0)
                    >= 3.0
            },
        );
    }
    assert!(
        c.metric(0, "keel_checkpoint_signatures_received_total")
            .unwrap()
            >= 6.0
    );

    // Clear answers for what is not there.
    let (code, v) = c.get(1, "/v1/checkpoints/999999999");
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("999999999")
    );
    let (code, v) = c.get(1, "/v1/checkpoints/soon");
    assert_eq!(code, 400, "{v}");

    // A validator stopped while the others certify more checkpoints than its signature
    // window reads its own back after the restart, then catches up with the others' latest
    // (adopting their certificate or certifying as it executes) and agrees with them.
    let before = latest_sequence(&c, STOPPED);
    let stopped = c.stop(STOPPED);
    assert!(
        stopped.success(),
        "validator {STOPPED} exited with {stopped} on SIGTERM; log:\n{}",
        c.log_tail(STOPPED)
    );
    c.wait_for(
        Duration::from_secs(30),
        "three more checkpoints without validator 2 (beyond its window)",
        || latest_sequence(&c, 0) >= before + 3,
    );
    c.spawn(STOPPED);
    c.wait_ready(STOPPED, Duration::from_secs(30));
    assert!(
        latest_sequence(&c, STOPPED) >= before,
        "read back after the restart"
    );
    checkpoint(&c, STOPPED, &before.to_string());
    let target = latest_sequence(&c, 0) + 1;
    c.wait_for(
        Duration::from_secs(30),
        "validator 2 to reach the others' latest checkpoint",
        || latest_sequence(&c, STOPPED) >= target,
    );
    let mine = checkpoint(&c, STOPPED, "latest");
    let sequence = mine["sequence"].as_u64().unwrap();
    assert_eq!(
        checkpoint(&c, 0, &sequence.to_string())["digest"],
        mine["digest"]
    );
    certificate(&mine).verify(&committee, chain_id).unwrap();
    println!(
        "validator 2 out-of-window signatures after the restart: {:?}",
        c.metric(
            STOPPED,
            "keel_checkpoint_signatures_refused_total{reason=\"out_of_window\"}"
        )
    );
}
