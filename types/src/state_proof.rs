//! The state root: a binary Merkle tree over the 256 bucket checksums, and bucket proofs.
//!
//! The state is split into [`STATE_BUCKETS`] key buckets; each bucket's checksum is the
//! 32-byte digest of its lattice hash (keel-storage computes those). The state root is the
//! root of a complete binary tree whose leaves are the checksums in bucket order:
//!
//! ```text
//!   leaf_i = blake3_keyed(LEAF_KEY, i as u8 || checksum_i)
//!   node   = blake3_keyed(NODE_KEY, left || right)
//!   root   = the node at depth 0 (8 levels above the 256 leaves)
//! ```
//!
//! Invariants:
//! - Leaves and inner nodes are hashed under different derived keys, so a leaf can never be
//!   passed off as an inner node (or the reverse); the leaf also binds its bucket index.
//! - A [`BucketProof`] holds exactly [`PROOF_DEPTH`] sibling digests (the tree is complete:
//!   256 = 2^8), leaf level first; [`verify_bucket`] recomputes the path from the checksum and
//!   accepts only if it ends at the root. A proof therefore verifies for one bucket, one
//!   checksum and one root only (up to blake3 collisions).
//! - Computing the root costs 511 blake3 compressions of at most 65 bytes, a few tens of
//!   microseconds: cheap enough to run after every executed block.
//!
//! It lives in keel-types (not keel-storage) because checkpoint verification and state-sync
//! messages need it on nodes that only hold the wire types.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Number of state buckets (leaves of the tree).
pub const STATE_BUCKETS: usize = 256;
/// Levels between a leaf and the root: log2([`STATE_BUCKETS`]).
pub const PROOF_DEPTH: usize = 8;

/// The derived keys of leaves and inner nodes (domain separation).
static KEYS: LazyLock<([u8; 32], [u8; 32])> = LazyLock::new(|| {
    (
        blake3::derive_key("keel state merkle leaf v1", &[]),
        blake3::derive_key("keel state merkle node v1", &[]),
    )
});

fn leaf(bucket: u8, checksum: &Digest) -> Digest {
    let mut h = blake3::Hasher::new_keyed(&KEYS.0);
    h.update(&[bucket]);
    h.update(checksum.as_bytes());
    Digest(*h.finalize().as_bytes())
}

fn node(left: &Digest, right: &Digest) -> Digest {
    let mut h = blake3::Hasher::new_keyed(&KEYS.1);
    h.update(left.as_bytes());
    h.update(right.as_bytes());
    Digest(*h.finalize().as_bytes())
}

/// Each level of the tree, leaves first (256, 128, …, 1 digests).
fn levels(checksums: &[Digest; STATE_BUCKETS]) -> Vec<Vec<Digest>> {
    let mut levels = Vec::with_capacity(PROOF_DEPTH + 1);
    levels.push(
        checksums
            .iter()
            .enumerate()
            .map(|(i, c)| leaf(i as u8, c))
            .collect::<Vec<_>>(),
    );
    while let Some(last) = levels.last()
        && last.len() > 1
    {
        let next = last.chunks_exact(2).map(|p| node(&p[0], &p[1])).collect();
        levels.push(next);
    }
    levels
}

/// The state root over the bucket checksums, in bucket order.
pub fn state_root_of(checksums: &[Digest; STATE_BUCKETS]) -> Digest {
    // Folds level by level in place: no allocation beyond the leaf row.
    let mut row: Vec<Digest> = checksums
        .iter()
        .enumerate()
        .map(|(i, c)| leaf(i as u8, c))
        .collect();
    let mut len = row.len();
    while len > 1 {
        for i in 0..len / 2 {
            row[i] = node(&row[2 * i], &row[2 * i + 1]);
        }
        len /= 2;
    }
    row[0]
}

/// The sibling digests from one bucket's leaf up to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProof {
    /// Siblings, leaf level first.
    pub siblings: [Digest; PROOF_DEPTH],
}

impl BucketProof {
    /// The proof for `bucket` in the tree over `checksums`.
    pub fn new(checksums: &[Digest; STATE_BUCKETS], bucket: u8) -> Self {
        let levels = levels(checksums);
        let mut siblings = [Digest::ZERO; PROOF_DEPTH];
        let mut index = usize::from(bucket);
        for (slot, level) in siblings.iter_mut().zip(&levels) {
            // INVARIANT: level k holds 256 >> k digests and index < 256 >> k, so index ^ 1 is
            // in range.
            *slot = level[index ^ 1];
            index >>= 1;
        }
        BucketProof { siblings }
    }
}

/// Whether `proof` shows that `bucket` has `checksum` in the state whose root is `root`.
pub fn verify_bucket(root: &Digest, bucket: u8, checksum: &Digest, proof: &BucketProof) -> bool {
    let mut acc = leaf(bucket, checksum);
    let mut index = usize::from(bucket);
    for sibling in &proof.siblings {
        acc = if index & 1 == 0 {
            node(&acc, sibling)
        } else {
            node(sibling, &acc)
        };
        index >>= 1;
    }
    acc == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn checksums(seed: u64) -> [Digest; STATE_BUCKETS] {
        std::array::from_fn(|i| Digest::of_tagged("checksum", &(seed, i as u64)))
    }

    #[test]
    fn the_proof_root_matches_the_folded_root() {
        let c = checksums(1);
        let levels = levels(&c);
        assert_eq!(levels.len(), PROOF_DEPTH + 1);
        assert_eq!(levels[PROOF_DEPTH], vec![state_root_of(&c)]);
    }

    #[test]
    fn leaves_and_nodes_hash_under_different_keys() {
        // The same bytes hashed as a leaf and under the node key give different digests.
        let d = Digest::of_bytes(b"x");
        let mut h = blake3::Hasher::new_keyed(&KEYS.1);
        h.update(&[7]);
        h.update(d.as_bytes());
        assert_ne!(leaf(7, &d), Digest(*h.finalize().as_bytes()));
        assert_ne!(leaf(7, &d), leaf(8, &d), "the leaf binds its bucket");
    }

    proptest! {
        #[test]
        fn a_proof_verifies_for_its_bucket_only(
            seed in any::<u64>(),
            bucket in any::<u8>(),
            other in any::<u8>(),
            flip in 0usize..32,
        ) {
            let c = checksums(seed);
            let root = state_root_of(&c);
            let proof = BucketProof::new(&c, bucket);
            let checksum = c[usize::from(bucket)];
            prop_assert!(verify_bucket(&root, bucket, &checksum, &proof));
            // Another bucket (with its own checksum or this one) fails.
            if other != bucket {
                prop_assert!(!verify_bucket(&root, other, &checksum, &proof));
                prop_assert!(!verify_bucket(&root, other, &c[usize::from(other)], &proof));
            }
            // Another checksum fails.
            let mut wrong = checksum;
            wrong.0[flip] ^= 1;
            prop_assert!(!verify_bucket(&root, bucket, &wrong, &proof));
            // Another root fails.
            let mut bad_root = root;
            bad_root.0[flip] ^= 1;
            prop_assert!(!verify_bucket(&bad_root, bucket, &checksum, &proof));
            // A tampered sibling fails.
            let mut bad = proof.clone();
            bad.siblings[flip % PROOF_DEPTH].0[flip] ^= 1;
            prop_assert!(!verify_bucket(&root, bucket, &checksum, &bad));
            // The proof of another state fails against this root.
            let mut changed = c;
            changed[usize::from(other)].0[0] ^= 1;
            prop_assert!(!verify_bucket(&state_root_of(&changed), bucket, &checksum, &proof));
        }
    }
}
