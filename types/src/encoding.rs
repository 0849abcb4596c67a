//! Canonical bcs encoding and size-limited decoding of untrusted bytes.
//!
//! Decoding checks the byte length against a caller-supplied cap *before* parsing, limits
//! container nesting, and requires the input to be consumed exactly, so two encodings of one
//! value cannot both decode. Vector lengths inside the input cannot make the decoder allocate
//! more than the input could fill, because serde caps pre-allocation and each element consumes
//! at least one byte.

use crate::error::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

/// Deepest container nesting accepted when decoding.
pub const MAX_DECODE_DEPTH: usize = 32;

/// The canonical encoding of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // INVARIANT: Keel's own types always serialise with bcs.
    bcs::to_bytes(value).expect("INVARIANT: keel types are bcs-serialisable")
}

/// Decodes `bytes` as `T`, refusing inputs over `limit` bytes. `what` names the type in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize, what: &'static str) -> Result<T> {
    if bytes.len() > limit {
        return Err(Error::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    bcs::from_bytes_with_limit(bytes, MAX_DECODE_DEPTH).map_err(|e| Error::Decode {
        what,
        reason: e.to_string(),
    })
}
