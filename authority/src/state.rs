//! How accounts and objects are laid out in the store's state keys, and the node's own
//! bookkeeping keys (receipts, the executed-height marker, stored batches).
//!
//! | state key | value |
//! |---|---|
//! | `a` ‖ address (32 bytes) | bcs [`Account`] |
//! | `o` ‖ owner (32 bytes) ‖ object key | bcs [`Object`] |
//!
//! Receipts live in the receipts column under the transaction digest; the executed marker in
//! the meta column under [`EXECUTED_KEY`]; batches in the batches column under their digest.

use crate::error::{Error, Result};
use keel_storage::{Column, Store};
use keel_types::{Account, Address, Digest, Height, Object, Receipt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

const ACCOUNT_TAG: u8 = b'a';
const OBJECT_TAG: u8 = b'o';

/// The meta-column key of the [`ExecutedMarker`].
pub const EXECUTED_KEY: &[u8] = b"executed";

/// The state key of an account.
pub fn account_key(address: &Address) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(ACCOUNT_TAG);
    key.extend_from_slice(&address.0);
    key
}

/// The state key of `owner`'s object `key`.
pub fn object_key(owner: &Address, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(33 + key.len());
    out.push(OBJECT_TAG);
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(key);
    out
}

/// What a state key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKey<'a> {
    /// An account.
    Account(Address),
    /// An object of `owner`.
    Object {
        /// The owner.
        owner: Address,
        /// The object's key.
        key: &'a [u8],
    },
}

/// Parses a state key written by this module.
pub fn parse_key(key: &[u8]) -> Option<StateKey<'_>> {
    let (&tag, rest) = key.split_first()?;
    let address = |bytes: &[u8]| -> Option<Address> { Some(Address(bytes.try_into().ok()?)) };
    match tag {
        ACCOUNT_TAG => Some(StateKey::Account(address(rest)?)),
        OBJECT_TAG if rest.len() > 32 => {
            let (owner, key) = rest.split_at(32);
            Some(StateKey::Object {
                owner: address(owner)?,
                key,
            })
        }
        _ => None,
    }
}

/// Decodes a value this node stored; failing means the store is corrupt.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    bcs::from_bytes(bytes).map_err(|e| Error::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// Decodes a stored account (absent accounts are all zero).
pub fn decode_account(bytes: Option<&[u8]>) -> Result<Account> {
    match bytes {
        None => Ok(Account::default()),
        Some(b) => decode(b, "account"),
    }
}

/// Decodes a stored object.
pub fn decode_object(bytes: Option<&[u8]>) -> Result<Option<Object>> {
    bytes.map(|b| decode(b, "object")).transpose()
}

/// Encodes a value for the store.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // INVARIANT: bcs encodes every type of this crate's schema (no maps with non-string keys
    // nor sequences beyond u32 lengths).
    bcs::to_bytes(value).expect("INVARIANT: schema types encode")
}

/// How far execution has got: the block at `height` and everything before it are executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutedMarker {
    /// The last executed height (0: genesis state only).
    pub height: Height,
    /// The last executed block (the genesis digest at height 0).
    pub block: Digest,
    /// Transactions executed (succeeded or failed) since genesis.
    pub executed_transactions: u64,
}

/// Reads the executed marker; `None` before genesis was applied.
pub fn executed_marker(store: &Store) -> Result<Option<ExecutedMarker>> {
    store
        .get(Column::Meta, EXECUTED_KEY)?
        .map(|b| decode(&b, "executed marker"))
        .transpose()
}

/// Reads a transaction's receipt.
pub fn receipt(store: &Store, transaction: &Digest) -> Result<Option<Receipt>> {
    store
        .get(Column::Receipts, &transaction.0)?
        .map(|b| decode(&b, "receipt"))
        .transpose()
}

/// Admission's view of accounts: as committed state holds them (a default account when
/// absent or unreadable).
pub struct StoreAccounts<'a>(pub &'a Store);

impl crate::AccountReader for StoreAccounts<'_> {
    fn account(&self, address: &Address) -> Account {
        account(self.0, address).unwrap_or_default()
    }
}

/// Reads an account from the latest committed state.
pub fn account(store: &Store, address: &Address) -> Result<Account> {
    let found = store.get_state(&account_key(address))?;
    decode_account(found.as_ref().map(|v| v.value.as_slice()))
}

/// Reads an object from the latest committed state.
pub fn object(store: &Store, owner: &Address, key: &[u8]) -> Result<Option<Object>> {
    let found = store.get_state(&object_key(owner, key))?;
    decode_object(found.as_ref().map(|v| v.value.as_slice()))
}
