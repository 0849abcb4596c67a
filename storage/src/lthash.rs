//! The incremental state root: a lattice hash (LtHash16) per key bucket.
//!
//! Each `(key, value)` pair maps to a 1024-lane vector of `u16` taken from blake3's extendable
//! output; a bucket's hash is the lane-wise sum (mod 2^16) of its pairs' vectors. Adding or
//! removing a pair is one addition or subtraction, so a commit updates the hash in O(changed
//! keys), independent of the order in which keys change; equal contents give equal hashes on
//! every node. An element is `ChaCha20(blake3(key, value))` truncated to the lattice size. Keys are spread over [`BUCKETS`] buckets by the first byte of `blake3(key)` and
//! stored under that byte, so one bucket is one contiguous key range: a state-sync chunk of a
//! bucket can be checked against that bucket's checksum alone. The root is the binary Merkle
//! root over `checksum_0 … checksum_255` with `checksum_i = blake3(lanes_i)` (the tree, its
//! domain separation and the [`BucketProof`] verifier live in [`keel_types::state_proof`]), so
//! one bucket's checksum can be proven against a certified root with 8 sibling digests.
//!
//! The 1024×16-bit parameters are those Lewi et al. analyse for LtHash (about 200 bits of
//! security against finding a second multiset with the same hash).

use keel_types::Digest;
pub use keel_types::state_proof::{BucketProof, verify_bucket};
use keel_types::state_proof::{STATE_BUCKETS, state_root_of};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Number of lanes in a lattice hash.
pub const LANES: usize = 1024;
/// Bytes in an encoded lattice hash.
pub const LATTICE_BYTES: usize = LANES * 2;
/// Number of key buckets (the leaves of the state root's Merkle tree).
pub const BUCKETS: usize = STATE_BUCKETS;

/// The bucket a state key belongs to.
pub fn bucket_of(key: &[u8]) -> u8 {
    blake3::hash(key).as_bytes()[0]
}

/// The 32-byte seed of a pair's lattice element: `blake3(len(key) || key || value)`.
///
/// The element itself is the seed's expansion to [`LATTICE_BYTES`]; storing seeds (not
/// elements) keeps the store's root journal at 32 bytes per changed key.
pub fn element_seed(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("keel state element v1");
    // Length-prefixing the key makes the (key, value) split unambiguous.
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    *hasher.finalize().as_bytes()
}

/// The lattice vector of an element seed: the first [`LATTICE_BYTES`] of the ChaCha20 keystream
/// keyed by the seed (a PRG expansion of a random-oracle output; twice as fast here as blake3's
/// extendable output, and the expansion dominates the cost of a state-root update).
fn expand(seed: &[u8; 32]) -> [u16; LANES] {
    let mut bytes = [0u8; LATTICE_BYTES];
    ChaCha20Rng::from_seed(*seed).fill_bytes(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([pair[0], pair[1]]);
    }
    lanes
}

/// A lattice hash: a multiset of `(key, value)` pairs, updated by adding and removing pairs.
#[derive(Clone, PartialEq, Eq)]
pub struct LtHash {
    lanes: Box<[u16; LANES]>,
}

impl Default for LtHash {
    fn default() -> Self {
        LtHash {
            lanes: Box::new([0; LANES]),
        }
    }
}

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({})", self.checksum().short())
    }
}

impl LtHash {
    /// Adds the pair `(key, value)`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.insert_seed(&element_seed(key, value));
    }

    /// Removes the pair `(key, value)` (which must have been added).
    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        self.remove_seed(&element_seed(key, value));
    }

    /// Adds the element whose [`element_seed`] is `seed`.
    pub fn insert_seed(&mut self, seed: &[u8; 32]) {
        let e = expand(seed);
        for (a, b) in self.lanes.iter_mut().zip(e.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// Removes the element whose [`element_seed`] is `seed`.
    pub fn remove_seed(&mut self, seed: &[u8; 32]) {
        let e = expand(seed);
        for (a, b) in self.lanes.iter_mut().zip(e.iter()) {
            *a = a.wrapping_sub(*b);
        }
    }

    /// The encoding stored on disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.le_bytes().to_vec()
    }

    /// The lanes as little-endian bytes, on the stack.
    fn le_bytes(&self) -> [u8; LATTICE_BYTES] {
        let mut bytes = [0u8; LATTICE_BYTES];
        for (pair, lane) in bytes.chunks_exact_mut(2).zip(self.lanes.iter()) {
            pair.copy_from_slice(&lane.to_le_bytes());
        }
        bytes
    }

    /// Decodes [`LtHash::to_bytes`]; `None` if the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LATTICE_BYTES {
            return None;
        }
        let mut out = LtHash::default();
        for (lane, pair) in out.lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(out)
    }

    /// A 32-byte digest of the lattice.
    pub fn checksum(&self) -> Digest {
        // No allocation: the root keeper checksums changed buckets after every executed block.
        Digest::of_bytes(&self.le_bytes())
    }
}

/// The lattice hashes of all buckets, and the root derived from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHash {
    buckets: Vec<LtHash>,
}

impl Default for StateHash {
    fn default() -> Self {
        StateHash {
            buckets: vec![LtHash::default(); BUCKETS],
        }
    }
}

impl StateHash {
    /// The lattice of `bucket`.
    pub fn bucket(&self, bucket: u8) -> &LtHash {
        &self.buckets[usize::from(bucket)]
    }

    /// Replaces the lattice of `bucket`.
    pub fn set_bucket(&mut self, bucket: u8, lattice: LtHash) {
        self.buckets[usize::from(bucket)] = lattice;
    }

    /// Adds a pair to its bucket.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.buckets[usize::from(bucket_of(key))].insert(key, value);
    }

    /// Mutable access to the lattice of `bucket`.
    pub fn bucket_mut(&mut self, bucket: u8) -> &mut LtHash {
        &mut self.buckets[usize::from(bucket)]
    }

    /// The per-bucket checksums, in bucket order.
    pub fn checksums(&self) -> [Digest; BUCKETS] {
        std::array::from_fn(|b| self.buckets[b].checksum())
    }

    /// The state root: the Merkle root over [`StateHash::checksums`].
    pub fn root(&self) -> Digest {
        state_root_of(&self.checksums())
    }

    /// The proof that `bucket`'s checksum is part of [`StateHash::root`].
    pub fn bucket_proof(&self, bucket: u8) -> BucketProof {
        BucketProof::new(&self.checksums(), bucket)
    }
}

/// The root over per-bucket checksums (what a state-sync client checks chunks against).
pub fn root_of_checksums(checksums: &[Digest; BUCKETS]) -> Digest {
    state_root_of(checksums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn order_independent_and_removal_inverts(
            pairs in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 1..8), prop::collection::vec(any::<u8>(), 0..8), 1..20),
            seed in any::<u64>(),
        ) {
            let pairs: Vec<_> = pairs.into_iter().collect();
            let mut forward = StateHash::default();
            for (k, v) in &pairs {
                forward.insert(k, v);
            }
            let mut shuffled = pairs.clone();
            let n = shuffled.len();
            shuffled.rotate_left((seed as usize) % n);
            shuffled.reverse();
            let mut backward = StateHash::default();
            for (k, v) in &shuffled {
                backward.insert(k, v);
            }
            prop_assert_eq!(forward.root(), backward.root());

            // Removing the last pair gives the hash of the rest.
            let (k, v) = &pairs[n - 1];
            let mut rest = StateHash::default();
            for (k, v) in &pairs[..n - 1] {
                rest.insert(k, v);
            }
            let b = usize::from(bucket_of(k));
            forward.buckets[b].remove(k, v);
            prop_assert_eq!(forward.root(), rest.root());
        }
    }

    #[test]
    fn different_values_give_different_roots() {
        let mut a = StateHash::default();
        let mut b = StateHash::default();
        a.insert(b"k", b"1");
        b.insert(b"k", b"2");
        assert_ne!(a.root(), b.root());
        // The key/value split is part of the hash.
        let mut c = StateHash::default();
        let mut d = StateHash::default();
        c.insert(b"ab", b"c");
        d.insert(b"a", b"bc");
        assert_ne!(c.root(), d.root());
    }

    proptest! {
        #[test]
        fn a_bucket_proof_verifies_its_checksum_against_the_root_only(
            pairs in prop::collection::vec((prop::collection::vec(any::<u8>(), 1..8), any::<u8>()), 1..30),
            pick in any::<prop::sample::Index>(),
            other in any::<u8>(),
        ) {
            let mut state = StateHash::default();
            for (k, v) in &pairs {
                state.insert(k, &[*v]);
            }
            let root = state.root();
            let (key, _) = &pairs[pick.index(pairs.len())];
            let bucket = bucket_of(key);
            let checksum = state.bucket(bucket).checksum();
            let proof = state.bucket_proof(bucket);
            prop_assert!(verify_bucket(&root, bucket, &checksum, &proof));
            if other != bucket {
                prop_assert!(!verify_bucket(&root, other, &checksum, &proof));
            }
            // The bucket with one more pair: its checksum no longer matches the old root.
            let mut grown = state.bucket(bucket).clone();
            grown.insert(b"extra", b"1");
            prop_assert!(!verify_bucket(&root, bucket, &grown.checksum(), &proof));
            // And the old proof does not verify against the new state's root.
            state.set_bucket(bucket, grown);
            prop_assert!(!verify_bucket(&state.root(), bucket, &checksum, &proof));
        }
    }

    /// The cost the execution thread pays after every block (run with `--ignored --nocapture`
    /// in release mode for the figure).
    #[test]
    #[ignore]
    fn cost_of_the_root() {
        let mut state = StateHash::default();
        for i in 0..10_000u32 {
            state.insert(&i.to_le_bytes(), b"v");
        }
        let n = 2_000;
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(state.root());
        }
        let full = started.elapsed() / n;
        let checksums = state.checksums();
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(root_of_checksums(std::hint::black_box(&checksums)));
        }
        let tree = started.elapsed() / n;
        println!("state root: {full:?} per root, of which the Merkle tree {tree:?}");
    }

    #[test]
    fn bytes_round_trip() {
        let mut h = LtHash::default();
        h.insert(b"x", b"y");
        assert_eq!(LtHash::from_bytes(&h.to_bytes()), Some(h));
        assert_eq!(LtHash::from_bytes(&[0; 3]), None);
    }
}
