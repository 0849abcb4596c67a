//! Governance rules: how votes for committee changes are counted, when a change is scheduled
//! and how an epoch ends. Pure functions over the [`EpochState`] kept in the executed state
//! (state key [`EPOCH_STATE_KEY`]), so every validator applies them identically.
//!
//! Rules, checked in this order for a vote by `voter` for `change` in epoch `e`:
//! 1. `e` is the current epoch, and `voter` is a member of the current committee;
//! 2. a change already scheduled counts as done (a repeated request is harmless), a vote
//!    already counted is not counted twice;
//! 3. the change must still make sense against the committee as the scheduled changes will
//!    leave it: an added validator's protocol key, network key and address are not in use (by
//!    the current or the next committee); a removed, re-staked or rotating validator is in the
//!    next committee; a key rotation is voted by the validator itself; a validator is not
//!    removed and added (or added and removed) in one epoch; the next committee keeps at least
//!    one validator;
//! 4. a voter has at most [`MAX_OPEN_VOTES_PER_VALIDATOR`] changes waiting for votes;
//! 5. a change is scheduled when its voters hold more than 2/3 of the current stake (a key
//!    rotation: when the rotating validator votes); the first scheduled change fixes the end
//!    of the epoch at `change_delay_blocks` after the block that scheduled it.
//!
//! A refused vote is a failed transaction whose receipt gives the reason; it changes nothing.
//! At the end of the epoch ([`EpochState::ends_with`]) [`next_epoch`] applies the scheduled
//! changes in order, and pending votes are dropped: votes are per epoch.

use keel_types::{
    Committee, CommitteeChange, Epoch, EpochState, Height, PublicKey, ScheduledChange,
    ValidatorIndex, ValidatorInfo,
    governance::{MAX_OPEN_VOTES_PER_VALIDATOR, PendingChange, apply_change},
};

/// The state key of the [`EpochState`] (tag `s`: system records no client can write).
pub const EPOCH_STATE_KEY: &[u8] = b"s/epoch";

/// What a counted vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted; the change waits for more votes.
    Counted {
        /// Stake of its voters so far.
        stake: u64,
        /// Stake needed to schedule it.
        needed: u64,
    },
    /// This voter's vote was already counted (nothing changes).
    AlreadyCounted,
    /// The change is scheduled (now, or already before this vote).
    Scheduled {
        /// The last height of the epoch.
        ends_at: Height,
    },
}

/// Checks `change` against the committee as it is and as the scheduled changes leave it
/// (rule 3 above, without the voter).
pub fn check_change(state: &EpochState, change: &CommitteeChange) -> Result<(), String> {
    let current = state.committee.validators();
    let next = state.next_validators();
    let removed_now = |key: &PublicKey| {
        state.scheduled.iter().any(|s| {
            matches!(&s.change, CommitteeChange::Remove { protocol_key } if protocol_key == key)
        })
    };
    let added_now = |key: &PublicKey| {
        state.scheduled.iter().any(|s| {
            matches!(&s.change, CommitteeChange::Add { validator, .. } if &validator.protocol_key == key)
        })
    };
    let in_next = |key: &PublicKey| next.iter().any(|v| &v.protocol_key == key);
    let epoch = state.epoch();
    match change {
        CommitteeChange::Add { validator, .. } => {
            if removed_now(&validator.protocol_key) {
                return Err(format!(
                    "validator {} is removed in epoch {epoch}; it can be added again from the next epoch",
                    validator.protocol_key
                ));
            }
            let others = current.iter().chain(next.iter());
            check_unused(others, validator, None)
        }
        CommitteeChange::Remove { protocol_key } => {
            if !in_next(protocol_key) {
                return Err(format!(
                    "validator {protocol_key} is not in the committee (or its removal is already scheduled)"
                ));
            }
            if added_now(protocol_key) {
                return Err(format!(
                    "validator {protocol_key} is added in epoch {epoch}; it can be removed from the next epoch"
                ));
            }
            let mut after = next.clone();
            apply_change(&mut after, change);
            if after.is_empty() {
                return Err("the change would leave no validator".into());
            }
            Ok(())
        }
        CommitteeChange::SetStake { protocol_key, .. } => {
            if !in_next(protocol_key) {
                return Err(format!(
                    "validator {protocol_key} is not in the next committee"
                ));
            }
            Ok(())
        }
        CommitteeChange::RotateKeys {
            protocol_key,
            new_protocol_key,
            new_network_key,
            ..
        } => {
            let Some(me) = next.iter().find(|v| &v.protocol_key == protocol_key) else {
                return Err(format!(
                    "validator {protocol_key} is not in the next committee"
                ));
            };
            let rotated = ValidatorInfo {
                protocol_key: *new_protocol_key,
                network_key: *new_network_key,
                ..me.clone()
            };
            let others = current
                .iter()
                .chain(next.iter())
                .filter(|v| &v.protocol_key != protocol_key);
            check_unused(others, &rotated, Some(&me.address))
        }
    }
}

/// Whether `validator`'s keys (and address, unless it is `own_address`) are used by `others`.
fn check_unused<'a>(
    others: impl Iterator<Item = &'a ValidatorInfo>,
    validator: &ValidatorInfo,
    own_address: Option<&String>,
) -> Result<(), String> {
    for other in others {
        for key in [validator.protocol_key, validator.network_key] {
            if key == other.protocol_key || key == other.network_key {
                return Err(format!(
                    "key {key} is already in use by validator {}",
                    other.protocol_key
                ));
            }
        }
        if own_address != Some(&validator.address) && other.address == validator.address {
            return Err(format!(
                "address {} is already in use by validator {}",
                validator.address, other.protocol_key
            ));
        }
    }
    Ok(())
}

/// Counts `voter`'s vote for `change` in `epoch`, executed in the block at `height`.
pub fn vote(
    state: &mut EpochState,
    voter: &PublicKey,
    epoch: Epoch,
    change: &CommitteeChange,
    height: Height,
) -> Result<VoteOutcome, String> {
    if epoch != state.epoch() {
        return Err(format!(
            "the vote is for epoch {epoch}, the current epoch is {}",
            state.epoch()
        ));
    }
    let committee = &state.committee;
    let Some(index) = committee.index_of(voter) else {
        return Err(format!(
            "sender {voter} is not a validator of epoch {epoch}"
        ));
    };
    let digest = change.digest();
    if state.scheduled.iter().any(|s| s.digest == digest) {
        return Ok(scheduled(state));
    }
    if let CommitteeChange::RotateKeys { protocol_key, .. } = change
        && protocol_key != voter
    {
        return Err(format!(
            "only validator {protocol_key} itself may rotate its keys"
        ));
    }
    check_change(state, change)?;
    let position = state.pending.iter().position(|p| p.digest == digest);
    if position.is_some_and(|p| state.pending[p].voters.contains(&index)) {
        return Ok(VoteOutcome::AlreadyCounted);
    }
    let open = state
        .pending
        .iter()
        .filter(|p| p.voters.contains(&index))
        .count();
    if open >= MAX_OPEN_VOTES_PER_VALIDATOR {
        return Err(format!(
            "validator {voter} already has {open} changes waiting for votes, the limit is {MAX_OPEN_VOTES_PER_VALIDATOR}"
        ));
    }
    let mut voters = position.map_or_else(Vec::new, |p| state.pending[p].voters.clone());
    let at = voters.partition_point(|v| *v < index);
    voters.insert(at, index);
    let stake: u64 = voters.iter().map(|v| committee.stake(*v)).sum();
    let self_authorized = matches!(change, CommitteeChange::RotateKeys { .. });
    if !(self_authorized || committee.is_quorum(stake)) {
        let needed = committee.quorum_threshold();
        match position {
            Some(p) => state.pending[p].voters = voters,
            None => state.pending.push(PendingChange {
                digest,
                change: change.clone(),
                voters,
            }),
        }
        return Ok(VoteOutcome::Counted { stake, needed });
    }
    // Scheduling: the committee it leads to must be valid.
    let mut after = state.next_validators();
    apply_change(&mut after, change);
    Committee::new(Epoch(epoch.0.saturating_add(1)), after)
        .map_err(|e| format!("the change would make an invalid committee: {e}"))?;
    if let Some(p) = position {
        state.pending.remove(p);
    }
    state.scheduled.push(ScheduledChange {
        digest,
        change: change.clone(),
        scheduled_at: height,
    });
    if state.ends_at.is_none() {
        state.ends_at = Some(Height(
            height
                .0
                .saturating_add(state.params.change_delay_blocks.max(1)),
        ));
    }
    Ok(scheduled(state))
}

fn scheduled(state: &EpochState) -> VoteOutcome {
    VoteOutcome::Scheduled {
        // INVARIANT: a scheduled change sets `ends_at`; the length limit may end it sooner.
        ends_at: state.ends_at.unwrap_or_default(),
    }
}

/// The record of the epoch after `state`'s, which ends with the block at `height`.
pub fn next_epoch(state: &EpochState, height: Height) -> EpochState {
    EpochState {
        committee: state.next_committee(),
        started_after: height,
        params: state.params,
        pending: Vec::new(),
        scheduled: Vec::new(),
        ends_at: None,
    }
}

/// The voters of a pending change as committee indices (for the admin API).
pub fn voters_of(state: &EpochState, change: &keel_types::Digest) -> Vec<ValidatorIndex> {
    state
        .pending
        .iter()
        .find(|p| &p.digest == change)
        .map(|p| p.voters.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{
        ChainId, EpochParams, KeyPair, PossessionProof, Stake, test_utils::committee,
    };

    const CHAIN: ChainId = ChainId(1);

    fn state(n: usize) -> (EpochState, Vec<KeyPair>) {
        let (c, keys) = committee(n);
        (EpochState::genesis(c, EpochParams::default()), keys)
    }

    fn add(seed: u8, address: &str) -> CommitteeChange {
        let protocol = KeyPair::from_seed(&[seed; 32]);
        let network = KeyPair::from_seed(&[seed ^ 0xff; 32]);
        CommitteeChange::Add {
            validator: ValidatorInfo {
                protocol_key: protocol.public(),
                network_key: network.public(),
                stake: Stake(1),
                address: address.into(),
            },
            proof: PossessionProof::create(&protocol, &network, CHAIN),
        }
    }

    #[test]
    fn a_change_is_scheduled_by_more_than_two_thirds_of_the_stake() {
        let (mut s, keys) = state(4);
        let e = s.epoch();
        let change = add(50, "10.0.0.9:1");
        let h = Height(10);
        assert_eq!(
            vote(&mut s, &keys[0].public(), e, &change, h),
            Ok(VoteOutcome::Counted {
                stake: 1,
                needed: 3
            })
        );
        assert_eq!(
            vote(&mut s, &keys[0].public(), e, &change, h),
            Ok(VoteOutcome::AlreadyCounted),
            "a repeated vote counts once"
        );
        assert!(matches!(
            vote(&mut s, &keys[1].public(), e, &change, h),
            Ok(VoteOutcome::Counted { stake: 2, .. })
        ));
        assert!(s.scheduled.is_empty(), "2 of 4 is not a quorum");
        assert_eq!(
            vote(&mut s, &keys[2].public(), e, &change, Height(11)),
            Ok(VoteOutcome::Scheduled {
                ends_at: Height(11 + EpochParams::default().change_delay_blocks)
            })
        );
        assert!(s.pending.is_empty());
        assert_eq!(s.next_committee().size(), 5);
        // A fourth vote after scheduling is harmless.
        assert!(matches!(
            vote(&mut s, &keys[3].public(), e, &change, Height(12)),
            Ok(VoteOutcome::Scheduled { .. })
        ));
        assert_eq!(s.scheduled.len(), 1);
        let next = next_epoch(&s, Height(31));
        assert_eq!(next.epoch(), Epoch(e.0 + 1));
        assert_eq!(next.committee.size(), 5);
        assert_eq!(next.started_after, Height(31));
        assert!(next.scheduled.is_empty() && next.ends_at.is_none());
    }

    #[test]
    fn refusals_name_the_reason() {
        let (mut s, keys) = state(4);
        let e = s.epoch();
        let outsider = KeyPair::from_seed(&[77; 32]);
        let change = add(50, "10.0.0.9:1");
        let err = vote(&mut s, &outsider.public(), e, &change, Height(1)).unwrap_err();
        assert!(err.contains("not a validator"), "{err}");
        let err = vote(
            &mut s,
            &keys[0].public(),
            Epoch(e.0 + 1),
            &change,
            Height(1),
        )
        .unwrap_err();
        assert!(err.contains("current epoch"), "{err}");
        // A key or address already in use.
        let used = s.committee.validators()[1].clone();
        let mut taken = add(51, &used.address);
        let err = vote(&mut s, &keys[0].public(), e, &taken, Height(1)).unwrap_err();
        assert!(err.contains("address"), "{err}");
        if let CommitteeChange::Add { validator, .. } = &mut taken {
            validator.address = "10.0.0.10:1".into();
            validator.network_key = used.network_key;
        }
        let err = vote(&mut s, &keys[0].public(), e, &taken, Height(1)).unwrap_err();
        assert!(err.contains("already in use"), "{err}");
        // Only the validator itself rotates its keys.
        let new = KeyPair::from_seed(&[90; 32]);
        let net = KeyPair::from_seed(&[91; 32]);
        let rotate = CommitteeChange::RotateKeys {
            protocol_key: keys[1].public(),
            new_protocol_key: new.public(),
            new_network_key: net.public(),
            proof: PossessionProof::create(&new, &net, CHAIN),
        };
        let err = vote(&mut s, &keys[0].public(), e, &rotate, Height(1)).unwrap_err();
        assert!(err.contains("itself"), "{err}");
        assert!(matches!(
            vote(&mut s, &keys[1].public(), e, &rotate, Height(1)),
            Ok(VoteOutcome::Scheduled { .. })
        ));
        assert!(s.pending.is_empty(), "refused votes left nothing behind");
    }

    #[test]
    fn no_removal_and_re_add_in_one_epoch_and_never_an_empty_committee() {
        let (mut s, keys) = state(1);
        let e = s.epoch();
        let remove = CommitteeChange::Remove {
            protocol_key: keys[0].public(),
        };
        let err = vote(&mut s, &keys[0].public(), e, &remove, Height(1)).unwrap_err();
        assert!(err.contains("no validator"), "{err}");

        let (mut s, keys) = state(4);
        let v3 = s.committee.validators()[3].clone();
        let remove = CommitteeChange::Remove {
            protocol_key: v3.protocol_key,
        };
        for k in &keys[..3] {
            vote(&mut s, &k.public(), e, &remove, Height(2)).unwrap();
        }
        assert_eq!(s.next_committee().size(), 3);
        // Re-adding the removed validator (its own keys, same address) waits for the next epoch.
        let readd = CommitteeChange::Add {
            validator: v3.clone(),
            proof: PossessionProof::create(&keys[3], &keys[3], CHAIN),
        };
        let err = vote(&mut s, &keys[0].public(), e, &readd, Height(3)).unwrap_err();
        assert!(err.contains("removed in epoch"), "{err}");
        // Removing it twice is refused too.
        let err = vote(&mut s, &keys[0].public(), e, &remove, Height(3));
        assert!(
            matches!(err, Ok(VoteOutcome::Scheduled { .. })),
            "same change: harmless"
        );
    }

    #[test]
    fn open_votes_per_validator_are_bounded() {
        let (mut s, keys) = state(4);
        let e = s.epoch();
        for i in 0..MAX_OPEN_VOTES_PER_VALIDATOR {
            let change = add(100 + i as u8, &format!("10.1.0.{i}:1"));
            vote(&mut s, &keys[0].public(), e, &change, Height(1)).unwrap();
        }
        let err = vote(
            &mut s,
            &keys[0].public(),
            e,
            &add(200, "10.2.0.1:1"),
            Height(1),
        )
        .unwrap_err();
        assert!(err.contains("limit"), "{err}");
        assert_eq!(s.pending.len(), MAX_OPEN_VOTES_PER_VALIDATOR);
        // Another validator is not affected.
        assert!(
            vote(
                &mut s,
                &keys[1].public(),
                e,
                &add(200, "10.2.0.1:1"),
                Height(1)
            )
            .is_ok()
        );
    }
}
