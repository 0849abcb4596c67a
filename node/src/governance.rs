//! Operators' governance requests (admin API) turned into this validator's signed votes, and
//! the epoch as the admin API shows it.
//!
//! A request names a change; the node checks it against the epoch record the executed state
//! holds (the same rules execution applies, `keel_authority::governance`), so a change that
//! would be refused is answered with a 400 naming the value at fault instead of a failed
//! transaction. A change already scheduled, or already voted for by this validator, is
//! answered without a new transaction (repeating a request is harmless). Otherwise the vote
//! is a transaction from this validator's protocol key, with the account's next nonce, signed
//! and admitted into the local mempool like any client transaction.

use crate::{clock::now_ms, epoch::EpochView, keys::ValidatorKeys};
use keel_api::{
    SubmitError,
    dto::{
        AddValidatorJson, ChangeRequest, EpochJson, PendingChangeJson, ScheduledChangeJson,
        StagedKeysJson, ValidatorJson, VoteJson,
    },
};
use keel_authority::governance::check_change;
use keel_types::{
    ChainId, Committee, CommitteeChange, KeyPair, Nonce, Op, PossessionProof, PublicKey, Signature,
    SignedTransaction, Stake, TimestampMs, Transaction, ValidatorIndex, ValidatorInfo,
};

/// How long a vote transaction stays valid (it is normally executed within a second).
pub const VOTE_LIFETIME_MS: u64 = 60_000;

fn invalid(field: &str, reason: impl std::fmt::Display) -> SubmitError {
    SubmitError::Invalid(format!("{field}: {reason}"))
}

fn signature(hex_value: &str, field: &str) -> Result<Signature, SubmitError> {
    let bytes = hex::decode(hex_value).map_err(|e| invalid(field, format!("not hex: {e}")))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| invalid(field, format!("{} bytes, a signature has 64", b.len())))?;
    Ok(Signature(bytes))
}

fn key(value: &str, field: &str) -> Result<PublicKey, SubmitError> {
    value.parse().map_err(|e| invalid(field, e))
}

/// Resolves a validator named by committee index or protocol key (hex).
fn member(committee: &Committee, id: &str) -> Result<PublicKey, SubmitError> {
    if let Ok(index) = id.parse::<u32>() {
        return committee
            .validator(ValidatorIndex(index))
            .map(|v| v.protocol_key)
            .ok_or_else(|| {
                invalid(
                    "id",
                    format!(
                        "no validator {index} in epoch {} ({} members)",
                        committee.epoch(),
                        committee.size()
                    ),
                )
            });
    }
    key(id, "id")
}

/// The change a request names. A rotation moves this validator from the keys it uses in
/// the epoch of `view` to the `staged` ones.
pub fn change_of(
    request: ChangeRequest,
    view: &EpochView,
    staged: Option<&ValidatorKeys>,
    chain_id: ChainId,
) -> Result<CommitteeChange, SubmitError> {
    let committee = view.committee();
    Ok(match request {
        ChangeRequest::Add(AddValidatorJson {
            protocol_key,
            network_key,
            address,
            stake,
            proof_protocol,
            proof_network,
        }) => CommitteeChange::Add {
            validator: ValidatorInfo {
                // The chain's rule (keel_types::address::check_address), as peers dial it.
                address: {
                    address
                        .parse::<keel_p2p::PeerAddress>()
                        .map_err(|e| invalid("address", e))?;
                    address
                },
                protocol_key: key(&protocol_key, "protocol_key")?,
                network_key: key(&network_key, "network_key")?,
                stake: Stake(stake),
            },
            proof: PossessionProof {
                protocol: signature(&proof_protocol, "proof_protocol")?,
                network: signature(&proof_network, "proof_network")?,
            },
        },
        ChangeRequest::Remove { validator } => CommitteeChange::Remove {
            protocol_key: member(committee, &validator)?,
        },
        ChangeRequest::SetStake { validator, stake } => CommitteeChange::SetStake {
            protocol_key: member(committee, &validator)?,
            stake: Stake(stake),
        },
        ChangeRequest::RotateKeys => {
            let Some(staged) = staged else {
                return Err(SubmitError::Invalid(
                    "no keys are staged (POST /admin/keys/stage first; a rotation that took \
                     effect uses up its staged keys)"
                        .into(),
                ));
            };
            CommitteeChange::RotateKeys {
                protocol_key: view.keys.protocol.public(),
                new_protocol_key: staged.protocol.public(),
                new_network_key: staged.network.public(),
                proof: PossessionProof::create(&staged.protocol, &staged.network, chain_id),
            }
        }
    })
}

/// Checks `change` and, unless this validator's vote is already counted, signs the vote.
/// `nonce` is the protocol key account's next nonce.
pub fn vote(
    view: &EpochView,
    change: CommitteeChange,
    key: &KeyPair,
    chain_id: ChainId,
    nonce: Nonce,
) -> Result<(VoteJson, Option<SignedTransaction>), SubmitError> {
    let Some(me) = view.me else {
        return Err(SubmitError::Invalid(format!(
            "this node is not a validator of epoch {}: only members vote",
            view.epoch()
        )));
    };
    change
        .validate(chain_id, "body")
        .map_err(|e| SubmitError::Invalid(e.to_string()))?;
    let digest = change.digest();
    let answer = |transaction: Option<String>, scheduled| VoteJson {
        change: digest.to_string(),
        description: change.describe(),
        transaction,
        effective_epoch: view.epoch().0 + 1,
        scheduled,
    };
    if view.state.scheduled.iter().any(|s| s.digest == digest) {
        return Ok((answer(None, true), None));
    }
    let voted = view
        .state
        .pending
        .iter()
        .any(|p| p.digest == digest && p.voters.contains(&me));
    if voted {
        return Ok((answer(None, false), None));
    }
    check_change(&view.state, &change).map_err(SubmitError::Invalid)?;
    let tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce,
        expiry: TimestampMs(now_ms().0 + VOTE_LIFETIME_MS),
        ops: vec![Op::Governance {
            epoch: view.epoch(),
            change: change.clone(),
        }],
    }
    .sign(key);
    Ok((answer(Some(tx.digest().to_string()), false), Some(tx)))
}

/// The staged keys as `POST /admin/keys/stage` answers them.
pub fn staged_json(staged: &ValidatorKeys, new: bool, chain_id: ChainId) -> StagedKeysJson {
    let proof = PossessionProof::create(&staged.protocol, &staged.network, chain_id);
    StagedKeysJson {
        protocol_key: staged.protocol.public().to_string(),
        network_key: staged.network.public().to_string(),
        proof_protocol: hex::encode(proof.protocol.0),
        proof_network: hex::encode(proof.network.0),
        new,
    }
}

fn validators(committee: &Committee) -> Vec<ValidatorJson> {
    committee
        .validators()
        .iter()
        .enumerate()
        .map(|(i, v)| ValidatorJson {
            index: i as u32,
            protocol_key: v.protocol_key.to_string(),
            network_key: v.network_key.to_string(),
            stake: v.stake.0,
            address: v.address.clone(),
        })
        .collect()
}

/// The epoch as `GET /admin/epoch` shows it.
pub fn epoch_json(view: &EpochView) -> EpochJson {
    let state = &view.state;
    let committee = &state.committee;
    let limit = state.params.max_length_blocks;
    EpochJson {
        epoch: view.epoch().0,
        validator: view.me.map(|m| m.0),
        committee: validators(committee),
        started_after: state.started_after.0,
        ends_at: state.ends_at.map(|h| h.0),
        ends_by: (limit > 0).then(|| state.started_after.0.saturating_add(limit)),
        pending: state
            .pending
            .iter()
            .map(|p| PendingChangeJson {
                change: p.digest.to_string(),
                description: p.change.describe(),
                voters: p.voters.iter().map(|v| v.0).collect(),
                stake: p.voters.iter().map(|v| committee.stake(*v)).sum(),
                needed: committee.quorum_threshold(),
            })
            .collect(),
        scheduled: state
            .scheduled
            .iter()
            .map(|s| ScheduledChangeJson {
                change: s.digest.to_string(),
                description: s.change.describe(),
                scheduled_at: s.scheduled_at.0,
            })
            .collect(),
        next_committee: validators(&state.next_committee()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{Epoch, EpochState, ValidatorInfo};

    #[test]
    fn an_added_validators_address_must_be_dialable() {
        let dir = tempfile::tempdir().unwrap();
        let (protocol, network) = crate::setup::keygen(dir.path()).unwrap();
        let keys = crate::keys::KeyRing::load(
            &dir.path().join(crate::setup::PROTOCOL_KEY_FILE),
            &dir.path().join(crate::setup::NETWORK_KEY_FILE),
        )
        .unwrap();
        let member = ValidatorInfo {
            protocol_key: protocol.public(),
            network_key: network.public(),
            stake: Stake(1),
            address: "keel-0:7000".into(),
        };
        let committee = Committee::new(Epoch(1), vec![member]).unwrap();
        let view = EpochView::new(EpochState::genesis(committee, Default::default()), &keys);
        let joining = KeyPair::from_seed(&[7; 32]);
        let request = |address: &str| {
            ChangeRequest::Add(AddValidatorJson {
                protocol_key: joining.public().to_string(),
                network_key: joining.public().to_string(),
                address: address.into(),
                stake: 1,
                proof_protocol: "00".repeat(64),
                proof_network: "00".repeat(64),
            })
        };
        // `keel_4:7000` is host:port, but no peer could dial it.
        let Err(SubmitError::Invalid(e)) =
            change_of(request("keel_4:7000"), &view, None, ChainId(1))
        else {
            panic!("an undialable address was accepted")
        };
        assert!(e.starts_with("address: ") && e.contains("keel_4"), "{e}");
        assert!(change_of(request("keel-4.example:7000"), &view, None, ChainId(1)).is_ok());
    }
}
