//! Epoch changes in the deterministic simulator (see `keel_consensus::sim`'s `epochs` module:
//! the switch as a node carries it out around its core). Every run ends an epoch every few
//! heights, so a run crosses dozens of boundaries: each with whichever leader the reputation
//! election draws, Byzantine ones included. The checker's safety rules hold across epochs
//! (one chain of committed blocks, no equivocation in any round of any epoch), and commits
//! resume after each switch.
//!
//! `KEEL_SIM_SEEDS` sets the number of random scenarios (default 20 per committee size).

use keel_consensus::sim::{Behaviour, Crash, Partition, SimConfig, SimReport, Simulation};
use keel_types::{ValidatorIndex, test_utils::env_knob};

/// Heights per epoch in these runs.
const EPOCH_LENGTH: u64 = 8;

fn assert_safe_and_live(report: &SimReport, what: &str, min_epochs: u64) {
    assert!(
        report.violations.is_empty(),
        "{what}: safety violations: {:#?}",
        report.violations
    );
    let honest_up: Vec<usize> = report
        .commits_after_stable
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|_| i))
        .collect();
    for &i in &honest_up {
        assert!(
            report.epochs[i] >= min_epochs,
            "{what}: replica {i} only reached epoch {}: {report:?}",
            report.epochs[i]
        );
    }
    assert!(
        report.min_commits_after_stable() >= EPOCH_LENGTH,
        "{what}: commits did not resume after stabilisation: {report:?}"
    );
}

fn with_epochs(config: SimConfig) -> SimConfig {
    SimConfig {
        epoch_length: EPOCH_LENGTH,
        ..config
    }
}

#[test]
fn honest_committees_change_epochs_and_keep_committing() {
    for n in [4, 7] {
        let report = Simulation::new(with_epochs(SimConfig::honest(n, 11))).run();
        assert_safe_and_live(&report, &format!("honest n={n}"), 10);
        // Every replica's chain crosses the same boundaries: equal epochs, no replica held back.
        let (min, max) = (
            report.epochs.iter().min().unwrap(),
            report.epochs.iter().max().unwrap(),
        );
        assert!(max - min <= 1, "epochs {:?}", report.epochs);
        println!(
            "n={n}: {} epochs, heights {:?}, old-epoch messages refused {}, newer held {}",
            max, report.heights, report.old_epoch_refused, report.future_epoch_held
        );
    }
}

/// One replica of four is Byzantine (each behaviour in turn) and leads at some of the many
/// boundaries; or an honest leader crashes and restarts while boundaries pass.
#[test]
fn a_byzantine_or_crashed_leader_at_the_boundaries_keeps_safety_and_liveness() {
    for behaviour in Behaviour::BYZANTINE {
        let mut config = with_epochs(SimConfig::honest(4, 21));
        config.behaviours[1] = behaviour;
        let report = Simulation::new(config).run();
        assert_safe_and_live(&report, &format!("{behaviour:?}"), 5);
    }
    for seed in 0..4 {
        let mut config = with_epochs(SimConfig::honest(4, 30 + seed));
        config.crashes = vec![Crash {
            replica: ValidatorIndex(seed as u32),
            at_ms: 1_000 + 300 * seed,
            restart_ms: Some(3_000 + 300 * seed),
            wipe_safety: false,
        }];
        config.stable_ms = 3_000 + 300 * seed;
        let report = Simulation::new(config).run();
        assert_safe_and_live(&report, &format!("crash of {seed}"), 5);
        println!(
            "replica {seed} down 2 s: epochs {:?}, catch-ups applied {}",
            report.epochs, report.epoch_syncs
        );
    }
}

/// A replica cut off across several boundaries learns of the new epochs late (from the
/// newer-epoch messages it is sent after the partition heals), catches up to each epoch's end
/// and rejoins.
#[test]
fn a_replica_that_learns_of_new_epochs_late_catches_up_and_rejoins() {
    for n in [4, 7] {
        let mut config = with_epochs(SimConfig::honest(n, 41));
        config.partitions = vec![Partition {
            from_ms: 500,
            heal_ms: 4_000,
            side: vec![ValidatorIndex(0)],
        }];
        config.stable_ms = 4_000;
        let report = Simulation::new(config).run();
        assert_safe_and_live(&report, &format!("late learner n={n}"), 10);
        assert!(
            report.epoch_syncs > 0,
            "the late replica never caught up by sync"
        );
        let (min, max) = (
            report.epochs.iter().min().unwrap(),
            report.epochs.iter().max().unwrap(),
        );
        assert!(
            max - min <= 1,
            "the late replica did not rejoin: {:?}",
            report.epochs
        );
        println!(
            "n={n}: replica 0 cut off 3.5 s; epochs at the end {:?}; catch-ups applied {}",
            report.epochs, report.epoch_syncs
        );
    }
}

/// Random scenarios (Byzantine replicas, loss, a healing partition, crash-restarts) with
/// epochs every few heights.
#[test]
fn random_scenarios_with_epoch_changes_stay_safe_and_live() {
    let seeds = env_knob::<u64>("KEEL_SIM_SEEDS").unwrap_or(20);
    let mut runs = 0;
    for n in [4, 7] {
        for seed in 0..seeds {
            let config = with_epochs(SimConfig::random(n, seed));
            let report = Simulation::new(config).run();
            assert_safe_and_live(&report, &format!("n={n} seed={seed}"), 2);
            runs += 1;
        }
    }
    println!("{runs} random runs with epoch changes: no violation");
}
