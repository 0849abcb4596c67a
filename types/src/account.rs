//! Accounts and objects: the state transactions read and write.

use crate::{crypto::PublicKey, digest::Digest, ids::Nonce};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An account address: the blake3 digest of the account's ed25519 public key.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The address of `key`.
    pub fn from_public_key(key: &PublicKey) -> Self {
        Address(Digest::of_tagged("keel/address", key.as_bytes()).0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", hex::encode(&self.0[..4]))
    }
}

impl std::str::FromStr for Address {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| crate::Error::InvalidField {
            field: "address".into(),
            reason: format!("expected 64 hex characters: {e}"),
        })?;
        Ok(Address(out))
    }
}

/// An account's balance and the nonce its next transaction must carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// The nonce the account's next transaction must use.
    pub nonce: Nonce,
}

/// Names an object: its owner and a key of at most [`crate::MAX_KEY_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// The owning account (the only one that can write it).
    pub owner: Address,
    /// The key within the owner's namespace.
    pub key: Vec<u8>,
}

/// An object's value and version. A version is the write stamp of the object's last write:
/// `nonce × MAX_OPS + op_index + 1` of the writing transaction's nonce and op. The sender's
/// nonce only grows, so versions of the sender's objects strictly increase with every write
/// and are never reused, not even by an object deleted and created again: a compare-and-swap
/// expecting a version of an earlier incarnation fails (no ABA). A compare-and-swap expecting
/// version 0 expects the object to be absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The write stamp of its last write (never 0).
    pub version: u64,
    /// At most [`crate::MAX_VALUE_LEN`] bytes.
    pub value: Vec<u8>,
}
