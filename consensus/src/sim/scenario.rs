//! Scenarios: what a simulated run looks like before it starts. A [`SimConfig`] names the
//! committee (one [`Behaviour`] per replica), the network (latency, loss, [`Partition`]s, the
//! stabilisation time), the [`Crash`]es and the replicas' tunables, all derived from one seed,
//! so a printed seed replays the same run. [`SimConfig::honest`] is a fault-free committee;
//! [`SimConfig::random`] draws up to f Byzantine replicas, loss, a partition that heals and
//! crash-restarts from the seed; [`SimConfig::random_wiped`] makes those crashes lose the
//! replicas' safety data (the amnesia scenario).

use crate::{leader::ElectionConfig, pacemaker::PacemakerConfig};
use keel_types::{ChainId, KeyPair, ValidatorIndex};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// The chain every simulated committee runs.
pub(super) const CHAIN: ChainId = ChainId(0x6b65_656c);

/// The key of replica `i` in the run seeded `seed`.
pub(super) fn key_for(seed: u64, i: usize) -> KeyPair {
    let mut h = blake3::Hasher::new();
    h.update(b"keel-sim-key");
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    KeyPair::from_seed(h.finalize().as_bytes())
}

/// How a replica behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Sends nothing.
    Silent,
    /// As leader, sends different blocks for one round to different halves of the committee.
    Equivocate,
    /// Votes for every proposal it sees, ignoring the safety rules.
    DoubleVote,
    /// Sends messages with corrupted signatures and votes forged in other validators' names.
    ForgeSignatures,
    /// Re-sends old messages it received to random replicas.
    Replay,
}

impl Behaviour {
    /// The Byzantine behaviours.
    pub const BYZANTINE: [Behaviour; 5] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::DoubleVote,
        Behaviour::ForgeSignatures,
        Behaviour::Replay,
    ];
}

/// Messages between the two sides are dropped from `from_ms` until `heal_ms`.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Start (virtual ms).
    pub from_ms: u64,
    /// End (virtual ms).
    pub heal_ms: u64,
    /// One side; the other side is everyone else.
    pub side: Vec<ValidatorIndex>,
}

/// A replica crashes at `at_ms` and restarts from its persisted state at `restart_ms`.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The replica.
    pub replica: ValidatorIndex,
    /// Crash time (virtual ms).
    pub at_ms: u64,
    /// Restart time, or never.
    pub restart_ms: Option<u64>,
    /// Whether the crash loses the replica's safety data (its blocks and commits survive): it
    /// restarts as a node that finds no safety data in its store.
    pub wipe_safety: bool,
}

/// A scenario.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// One behaviour per replica (the committee size is its length).
    pub behaviours: Vec<Behaviour>,
    /// Link latency range in ms (inclusive).
    pub latency_ms: (u64, u64),
    /// Probability a message (or fetch) is lost before `stable_ms`.
    pub loss: f64,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Crashes and restarts.
    pub crashes: Vec<Crash>,
    /// From this time on: no loss, no partition, no crash (Global Stabilisation Time).
    pub stable_ms: u64,
    /// End of the run.
    pub duration_ms: u64,
    /// Round timers.
    pub pacemaker: PacemakerConfig,
    /// Whether replicas persist safety data. Turning it off is for the negative test only.
    pub persist_safety: bool,
    /// Whether a replica restarting without safety data runs the amnesia guard
    /// ([`crate::RecoveryData::amnesiac`]), as a node does. Turning it off is for the negative
    /// test only: the replica then restarts from default safety data, trusted.
    pub amnesia_guard: bool,
    /// Whether every replica starts as a node with an empty store does: amnesiac (the genesis
    /// case of [`crate::amnesia`]). Off by default: replicas start trusted to have signed
    /// nothing, so runs that are not about the guard do not pay its first round.
    pub start_amnesiac: bool,
    /// The replicas' future-round window (see [`crate::CoreConfig::max_future_rounds`]).
    pub max_future_rounds: u64,
    /// The replicas' minimum block interval (see [`crate::CoreConfig::min_block_interval_ms`]).
    pub min_block_interval_ms: u64,
    /// How long an idle leader waits for payload (see [`crate::CoreConfig::max_idle_wait_ms`]);
    /// simulated replicas never have payload, so every leader following a QC waits this long.
    pub max_idle_wait_ms: u64,
    /// Leader election (reputation unless a test says otherwise).
    pub election: ElectionConfig,
    /// Replicas running a different election configuration than the others: for the negative
    /// test of the leader-agreement check only.
    pub election_override: Option<(Vec<ValidatorIndex>, ElectionConfig)>,
    /// Committed heights per epoch (0: the run stays in one epoch). Epoch `e` ends at height
    /// `e × epoch_length`; see the `epochs` module.
    pub epoch_length: u64,
}

impl SimConfig {
    /// An all-honest committee of `n` with fixed small latency and no faults.
    pub fn honest(n: usize, seed: u64) -> Self {
        SimConfig {
            seed,
            behaviours: vec![Behaviour::Honest; n],
            latency_ms: (5, 15),
            loss: 0.0,
            partitions: vec![],
            crashes: vec![],
            stable_ms: 0,
            duration_ms: 10_000,
            pacemaker: PacemakerConfig {
                base_timeout_ms: 300,
                min_timeout_ms: 100,
                max_backoff_exponent: 4,
                ..PacemakerConfig::default()
            },
            persist_safety: true,
            amnesia_guard: true,
            start_amnesiac: false,
            max_future_rounds: 100,
            min_block_interval_ms: 0,
            max_idle_wait_ms: 0,
            election: ElectionConfig::default(),
            election_override: None,
            epoch_length: 0,
        }
    }

    /// A random scenario for `n` replicas: up to f Byzantine replicas of mixed behaviours,
    /// random latency and loss, sometimes a partition that heals, and crash-restarts of honest
    /// replicas, never more than f faulty at once.
    pub fn random(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let f = (n - 1) / 3;
        let byzantine = rng.gen_range(0..=f);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut behaviours = vec![Behaviour::Honest; n];
        for i in &order[..byzantine] {
            behaviours[*i] = *Behaviour::BYZANTINE
                .choose(&mut rng)
                .unwrap_or(&Behaviour::Silent);
        }
        let max_latency = rng.gen_range(20..=100);
        let mut partitions = Vec::new();
        let mut stable_ms = rng.gen_range(1_000..4_000);
        if rng.gen_bool(0.6) {
            let from_ms = rng.gen_range(0..3_000);
            let heal_ms = from_ms + rng.gen_range(500..5_000);
            let side_len = rng.gen_range(1..=n / 2);
            let mut ids: Vec<usize> = (0..n).collect();
            ids.shuffle(&mut rng);
            partitions.push(Partition {
                from_ms,
                heal_ms,
                side: ids[..side_len]
                    .iter()
                    .map(|i| ValidatorIndex(*i as u32))
                    .collect(),
            });
            stable_ms = stable_ms.max(heal_ms);
        }
        let mut crashes = Vec::new();
        for i in &order[byzantine..byzantine + (f - byzantine)] {
            if rng.gen_bool(0.7) {
                let at_ms = rng.gen_range(0..4_000);
                let restart_ms = at_ms + rng.gen_range(100..4_000);
                crashes.push(Crash {
                    replica: ValidatorIndex(*i as u32),
                    at_ms,
                    restart_ms: Some(restart_ms),
                    wipe_safety: false,
                });
                stable_ms = stable_ms.max(restart_ms);
            }
        }
        // Drawn last, so the rest of a seed's scenario does not depend on it.
        let min_block_interval_ms = if rng.gen_bool(0.3) {
            rng.gen_range(10..=max_latency)
        } else {
            0
        };
        let max_idle_wait_ms = if rng.gen_bool(0.3) {
            rng.gen_range(10..=max_latency)
        } else {
            0
        };
        SimConfig {
            seed,
            behaviours,
            latency_ms: (max_latency / 4, max_latency),
            loss: rng.gen_range(0.0..0.05),
            partitions,
            crashes,
            stable_ms,
            // Long enough for two full leader rotations at the longest back-off: with f faulty
            // leaders up to 3 of 7 rounds in a rotation fail by design.
            duration_ms: stable_ms + 15_000,
            pacemaker: PacemakerConfig {
                base_timeout_ms: 4 * max_latency + 100,
                min_timeout_ms: 2 * max_latency + 50,
                max_backoff_exponent: 2,
                ..PacemakerConfig::default()
            },
            persist_safety: true,
            amnesia_guard: true,
            start_amnesiac: false,
            max_future_rounds: 100,
            min_block_interval_ms,
            max_idle_wait_ms,
            election: ElectionConfig::default(),
            election_override: None,
            epoch_length: 0,
        }
    }

    /// [`SimConfig::random`] where every crash loses the replica's safety data and the replica
    /// restarts soon (1 to 60 ms later), so it often restarts right after signing in its
    /// round. The restart delays are drawn from their own RNG: the rest of the scenario is the
    /// seed's random one.
    pub fn random_wiped(n: usize, seed: u64) -> Self {
        let mut config = SimConfig::random(n, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x3a3e_51a0);
        for crash in &mut config.crashes {
            crash.wipe_safety = true;
            crash.restart_ms = Some(crash.at_ms + rng.gen_range(1..=60));
        }
        config
    }
}
