//! Liveness with crashed validators, in the simulator: reputation-based election takes a
//! crashed validator's turns away, votes that come with timeouts keep the block before a failed
//! leader's round from being orphaned, and honest replicas acting on final history agree on
//! every round's leader (the checker; a committee misconfigured to disagree shows it bites).
//! Each test prints its figures (`--nocapture`).

use keel_consensus::{
    ElectionConfig, ElectionKind,
    sim::{Crash, SimConfig, Simulation},
};
use keel_types::ValidatorIndex;

/// 20 s of an honest committee of `n` (5-15 ms links), with `crashed` replicas down from the
/// start and never back, under `kind` election.
fn run(
    n: usize,
    crashed: usize,
    kind: ElectionKind,
    seed: u64,
) -> (f64, keel_consensus::sim::SimReport) {
    let mut config = SimConfig::honest(n, seed);
    config.duration_ms = 20_000;
    config.election.kind = kind;
    config.crashes = (0..crashed)
        .map(|i| Crash {
            replica: ValidatorIndex((n - 1 - i) as u32),
            at_ms: 0,
            restart_ms: None,
            wipe_safety: false,
        })
        .collect();
    let report = Simulation::new(config).run();
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    let least = report.min_commits_after_stable() as f64;
    (least / 20.0, report)
}

#[test]
fn f_crashed_validators_cost_the_others_little() {
    for n in [4usize, 7] {
        let f = (n - 1) / 3;
        for seed in [1u64, 2, 3] {
            let (healthy, _) = run(n, 0, ElectionKind::Reputation, seed);
            let (down, report) = run(n, f, ElectionKind::Reputation, seed);
            let (round_robin, _) = run(n, f, ElectionKind::RoundRobin, seed);
            println!(
                "n={n} seed={seed}: healthy {healthy:.1} blocks/s; {f} crashed: reputation {down:.1} blocks/s ({:.0}%), round robin {round_robin:.1} blocks/s ({:.0}%); unfinal leader disagreements {}",
                100.0 * down / healthy,
                100.0 * round_robin / healthy,
                report.unfinal_leader_disagreements
            );
            assert!(
                down >= 0.7 * healthy,
                "n={n} seed={seed}: {down:.1} blocks/s with {f} crashed, {healthy:.1} healthy"
            );
        }
    }
}

/// Round robin with validator 3 down: every fourth round's leader is dead. The block of the
/// round before it is still certified (from the votes that come with the timeouts) and
/// committed, so rounds 4k + 2 appear in the committed chain.
#[test]
fn the_block_before_a_failed_leaders_round_is_not_orphaned() {
    let mut config = SimConfig::honest(4, 4);
    config.election.kind = ElectionKind::RoundRobin;
    config.crashes = vec![Crash {
        replica: ValidatorIndex(3),
        at_ms: 0,
        restart_ms: None,
        wipe_safety: false,
    }];
    let mut sim = Simulation::new(config);
    sim.run_until(10_000);
    let committed = sim.committed_blocks(ValidatorIndex(0));
    let before_dead = committed
        .iter()
        .filter(|b| b.block.round.0 % 4 == 2)
        .count();
    let dead_turns = committed.last().map_or(0, |b| b.block.round.0 / 4);
    println!(
        "{} blocks committed; {before_dead} of them from the round before one of the dead leader's {dead_turns} rounds",
        committed.len()
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(
        before_dead * 10 >= dead_turns as usize * 9,
        "only {before_dead} of {dead_turns} blocks before a failed leader's round were committed"
    );
}

/// A replica that crashes and comes back is first passed over (its failures are recorded),
/// then leads again once it takes part.
#[test]
fn a_returning_validator_regains_its_turns() {
    let mut config = SimConfig::honest(4, 6);
    config.duration_ms = 15_000;
    config.crashes = vec![Crash {
        replica: ValidatorIndex(2),
        at_ms: 2_000,
        restart_ms: Some(5_000),
        wipe_safety: false,
    }];
    let mut sim = Simulation::new(config);
    sim.run_until(15_000);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    let committed = sim.committed_blocks(ValidatorIndex(0));
    let led = |from: u64, to: u64| {
        committed
            .iter()
            .filter(|b| (from..to).contains(&b.block.timestamp.0))
            .fold((0, 0), |(mine, all), b| {
                (
                    mine + usize::from(b.block.author == ValidatorIndex(2)),
                    all + 1,
                )
            })
    };
    let (down_led, down_all) = led(2_500, 5_000);
    let (back_led, back_all) = led(8_000, 15_000);
    println!(
        "validator 2 led {down_led} of {down_all} committed blocks while down, {back_led} of {back_all} after returning"
    );
    assert_eq!(down_led, 0);
    assert!(
        back_led * 8 >= back_all,
        "validator 2 led only {back_led} of {back_all} blocks after returning"
    );
}

/// The leader-agreement check bites: a committee split between round robin (replicas 0 and
/// 1) and reputation (2 and 3) has each half propose as, and vote for, its own leaders.
#[test]
fn the_checker_catches_replicas_that_disagree_on_leaders() {
    let mut config = SimConfig::honest(4, 8);
    config.election_override = Some((
        vec![ValidatorIndex(0), ValidatorIndex(1)],
        ElectionConfig {
            kind: ElectionKind::RoundRobin,
            ..ElectionConfig::default()
        },
    ));
    let report = Simulation::new(config).run();
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("as the leader of round")),
        "expected a leader disagreement, got {:?}",
        report.violations
    );
}
