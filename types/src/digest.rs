//! blake3 digests: every identifier in Keel is one.
//!
//! An id is `blake3(tag || bcs(content))` with a per-kind tag, so a batch and a block with the same
//! encoding still get different ids.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A 32-byte blake3 digest.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// The all-zero digest, used as the parent of genesis.
    pub const ZERO: Digest = Digest([0; 32]);

    /// blake3 of raw bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// blake3 of `tag` (length-prefixed) followed by the bcs encoding of `value`.
    pub fn of_tagged<T: Serialize + ?Sized>(tag: &str, value: &T) -> Self {
        // INVARIANT: bcs serialisation of Keel's own types cannot fail (no maps with
        // non-canonical keys, no unsupported serde features).
        let bytes = bcs::to_bytes(value).expect("INVARIANT: keel types are bcs-serialisable");
        Self::of_tagged_encoding(tag, &bytes)
    }

    /// [`Digest::of_tagged`] of a value whose bcs encoding is `encoding` (computed once by a
    /// caller that needs it for several purposes).
    pub fn of_tagged_encoding(tag: &str, encoding: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hash_tag(&mut hasher, tag);
        hasher.update(encoding);
        Digest(*hasher.finalize().as_bytes())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short hex prefix for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

pub(crate) fn hash_tag(hasher: &mut blake3::Hasher, tag: &str) {
    // A tag longer than 255 bytes would be a bug in a constant; tags are short literals.
    let len = u8::try_from(tag.len()).unwrap_or(u8::MAX);
    hasher.update(&[len]);
    hasher.update(tag.as_bytes());
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl std::str::FromStr for Digest {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| crate::Error::InvalidField {
            field: "digest".into(),
            reason: format!("expected 64 hex characters: {e}"),
        })?;
        Ok(Digest(out))
    }
}
