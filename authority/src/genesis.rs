//! The state a chain starts from, and what the store records about it: the genesis writes
//! (funded accounts, the first epoch record, the fee schedule), the genesis and executed
//! markers, and readers of the chain-wide records execution keeps in the state.

use crate::{
    error::Result,
    governance::EPOCH_STATE_KEY,
    state::{self, EXECUTED_KEY, ExecutedMarker, account_key, encode},
};
use keel_storage::{Column, Store, WriteOp};
use keel_types::{Account, Address, Digest, EpochState, FeeSchedule, Height};

/// The state a network starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisState {
    /// Names the genesis (the digest of the genesis file); it becomes the height-0 block.
    pub digest: Digest,
    /// Funded accounts.
    pub accounts: Vec<(Address, u64)>,
    /// The first epoch's governance record (`None`: a chain without governance, whose votes
    /// all fail).
    pub epoch: Option<EpochState>,
    /// The fees every transaction pays (written to the state at [`FEES_KEY`] unless zero).
    pub fees: FeeSchedule,
}

/// The state key of the chain's [`FeeSchedule`] (absent: no fees).
pub const FEES_KEY: &[u8] = b"s/fees";

impl GenesisState {
    /// The state entries genesis writes: one account per funded address (amounts given for
    /// the same address add up), in address order.
    pub fn state_writes(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut balances: std::collections::BTreeMap<Address, u64> = Default::default();
        for (address, amount) in &self.accounts {
            let b = balances.entry(*address).or_default();
            *b = b.saturating_add(*amount);
        }
        balances
            .into_iter()
            .map(|(address, balance)| {
                let account = Account {
                    balance,
                    nonce: Default::default(),
                };
                (account_key(&address), encode(&account))
            })
            .chain(
                self.epoch
                    .iter()
                    .map(|e| (EPOCH_STATE_KEY.to_vec(), encode(e))),
            )
            .chain(
                (self.fees != FeeSchedule::default())
                    .then(|| (FEES_KEY.to_vec(), encode(&self.fees))),
            )
            .collect()
    }

    /// The state root after genesis, computed without a store (every node gets the same).
    pub fn state_root(&self) -> Digest {
        let mut hash = keel_storage::StateHash::default();
        for (key, value) in self.state_writes() {
            hash.insert(&key, &value);
        }
        hash.root()
    }
}

const GENESIS_KEY: &[u8] = b"genesis";

/// Reads the fee schedule from the latest executed state (none: no fees).
pub fn read_fees(store: &Store) -> Result<FeeSchedule> {
    Ok(store
        .get_state(FEES_KEY)?
        .map(|v| state::decode(&v.value, "fee schedule"))
        .transpose()?
        .unwrap_or_default())
}

/// Reads the epoch record from the latest executed state.
pub fn read_epoch_state(store: &Store) -> Result<Option<EpochState>> {
    store
        .get_state(EPOCH_STATE_KEY)?
        .map(|v| state::decode(&v.value, "epoch state"))
        .transpose()
}

pub(crate) fn genesis_marker_digest(store: &Store) -> Result<Option<Digest>> {
    store
        .get(Column::Meta, GENESIS_KEY)?
        .map(|b| state::decode(&b, "genesis digest"))
        .transpose()
}

/// The writes that make a store whose state was installed from a checkpoint (state sync) open
/// as executed through `marker` on the chain of `genesis`.
pub fn installed_state_ops(genesis: Digest, marker: &ExecutedMarker) -> Vec<WriteOp> {
    vec![
        WriteOp {
            column: Column::Meta,
            key: GENESIS_KEY.to_vec(),
            value: Some(encode(&genesis)),
        },
        WriteOp {
            column: Column::Meta,
            key: EXECUTED_KEY.to_vec(),
            value: Some(encode(marker)),
        },
    ]
}

pub(crate) fn write_genesis(store: &Store, genesis: &GenesisState) -> Result<ExecutedMarker> {
    let mut txn = store.begin();
    for (key, value) in genesis.state_writes() {
        txn.put(&key, &value)?;
    }
    let marker = ExecutedMarker {
        height: Height(0),
        block: genesis.digest,
        executed_transactions: 0,
    };
    txn.commit_with(vec![
        WriteOp {
            column: Column::Meta,
            key: GENESIS_KEY.to_vec(),
            value: Some(encode(&genesis.digest)),
        },
        WriteOp {
            column: Column::Meta,
            key: EXECUTED_KEY.to_vec(),
            value: Some(encode(&marker)),
        },
    ])?;
    Ok(marker)
}
