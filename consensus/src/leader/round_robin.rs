//! Stake-weighted round robin: the history-free schedule.
//!
//! [`WeightedRoundRobin`] spreads rounds over validators in proportion to stake with the smooth
//! weighted round-robin schedule: over each cycle a validator leads `slots_i` rounds,
//! interleaved as evenly as possible. With equal stakes it is plain round robin. The schedule
//! depends only on the committee, so every replica computes the same leader for a round. It is
//! the election when configured so, and the fallback of [`super::Reputation`] for rounds whose
//! history a replica does not hold yet.

use super::LeaderElection;
use keel_types::{Committee, Round, ValidatorIndex};

/// Longest schedule cycle; stakes are scaled down to fit.
const MAX_CYCLE: u64 = 1_000;

/// Stake-weighted round robin.
#[derive(Debug, Clone)]
pub struct WeightedRoundRobin {
    schedule: Vec<ValidatorIndex>,
}

impl WeightedRoundRobin {
    /// The schedule for `committee`.
    pub fn new(committee: &Committee) -> Self {
        let total = committee.total_stake().max(1);
        // Scale stakes to at most MAX_CYCLE slots; every validator keeps at least one slot.
        let slots: Vec<u64> = committee
            .validators()
            .iter()
            .map(|v| {
                if total <= MAX_CYCLE {
                    v.stake.0
                } else {
                    ((u128::from(v.stake.0) * u128::from(MAX_CYCLE) / u128::from(total)) as u64)
                        .max(1)
                }
            })
            .collect();
        let cycle: u64 = slots.iter().sum();
        let mut current: Vec<i128> = vec![0; slots.len()];
        let mut schedule = Vec::with_capacity(cycle as usize);
        for _ in 0..cycle {
            for (c, s) in current.iter_mut().zip(&slots) {
                *c += i128::from(*s);
            }
            // Ties go to the lowest index, so the schedule is deterministic.
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by(|(ia, a), (ib, b)| a.cmp(b).then(ib.cmp(ia)))
                .unwrap_or((0, &0));
            current[best] -= i128::from(cycle);
            schedule.push(ValidatorIndex(best as u32));
        }
        WeightedRoundRobin { schedule }
    }
}

impl LeaderElection for WeightedRoundRobin {
    fn leader(&self, round: Round) -> ValidatorIndex {
        let len = self.schedule.len().max(1) as u64;
        self.schedule
            .get((round.0 % len) as usize)
            .copied()
            .unwrap_or(ValidatorIndex(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{Epoch, test_utils::committee_with_stakes};

    #[test]
    fn equal_stakes_rotate_in_order() {
        let (c, _) = committee_with_stakes(Epoch(1), &[5, 5, 5, 5]);
        let e = WeightedRoundRobin::new(&c);
        let leaders: Vec<u32> = (0..8).map(|r| e.leader(Round(r)).0).collect();
        assert_eq!(leaders, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn leadership_follows_stake() {
        let (c, _) = committee_with_stakes(Epoch(1), &[3, 1, 1, 1]);
        let e = WeightedRoundRobin::new(&c);
        let mut count = [0; 4];
        for r in 0..600 {
            count[e.leader(Round(r)).0 as usize] += 1;
        }
        assert_eq!(count, [300, 100, 100, 100]);
        // Interleaved, not in a block of three.
        assert_ne!(e.leader(Round(0)), e.leader(Round(1)));
    }

    #[test]
    fn huge_stakes_are_scaled() {
        let (c, _) = committee_with_stakes(Epoch(1), &[u64::MAX / 8, u64::MAX / 8, 1]);
        let e = WeightedRoundRobin::new(&c);
        assert!((0..2000).any(|r| e.leader(Round(r)) == ValidatorIndex(2)));
    }
}
