//! ed25519 keys and domain-separated signing.
//!
//! Every signature is over `blake3(len(tag) || tag || epoch || chain_id || bcs(content))`. Each
//! message kind has its own [`Domain`], so a vote can never be replayed as a timeout, a
//! checkpoint signature or a transaction; the epoch and chain id stop replays across epochs and
//! networks.
//!
//! One verification rule, alone or in a batch: ZIP-215 (ed25519-consensus). Its single check is
//! cofactored like the batch equation, and its batch accepts exactly the signatures its single
//! check accepts, so two honest nodes never disagree on a signature because one checked it in
//! a batch and the other alone. (ed25519-dalek's `verify_strict` is cofactorless: a signature
//! whose commitment carries a small-order component fails it yet passes any batch; keel no
//! longer uses it.) Signing stays with ed25519-dalek: its signatures are valid under both. Many
//! signatures at once go through the batch, falling back to one-by-one checks only to find
//! which signature is bad.

use crate::{
    digest::hash_tag,
    error::{Error, Result},
    ids::{ChainId, Epoch},
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What a signature is for; each kind has its own tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A client transaction.
    Transaction,
    /// A validator's acknowledgement that it stores a batch.
    BatchAck,
    /// A block proposal.
    Block,
    /// A vote for a block.
    Vote,
    /// A round timeout.
    Timeout,
    /// A checkpoint signature.
    Checkpoint,
    /// A governance (reconfiguration) vote.
    Governance,
}

impl Domain {
    /// The tag hashed into every signature of this kind.
    pub const fn tag(self) -> &'static str {
        match self {
            Domain::Transaction => "keel/transaction/v1",
            Domain::BatchAck => "keel/batch-ack/v1",
            Domain::Block => "keel/block/v1",
            Domain::Vote => "keel/vote/v1",
            Domain::Timeout => "keel/timeout/v1",
            Domain::Checkpoint => "keel/checkpoint/v1",
            Domain::Governance => "keel/governance/v1",
        }
    }
}

/// The 32-byte message actually signed for `content` in `domain`.
pub fn signing_message<T: Serialize + ?Sized>(
    domain: Domain,
    epoch: Epoch,
    chain_id: ChainId,
    content: &T,
) -> [u8; 32] {
    // INVARIANT: Keel's own types always serialise with bcs.
    let bytes = bcs::to_bytes(content).expect("INVARIANT: keel types are bcs-serialisable");
    signing_message_of_encoding(domain, epoch, chain_id, &bytes)
}

/// [`signing_message`] of content whose bcs encoding is `encoding`.
pub fn signing_message_of_encoding(
    domain: Domain,
    epoch: Epoch,
    chain_id: ChainId,
    encoding: &[u8],
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hash_tag(&mut hasher, domain.tag());
    hasher.update(&epoch.0.to_le_bytes());
    hasher.update(&chain_id.0.to_le_bytes());
    hasher.update(encoding);
    *hasher.finalize().as_bytes()
}

/// An ed25519 public key, held in its 32-byte compressed encoding.
///
/// Parsing text or certificates ([`PublicKey::from_bytes`], `FromStr`) checks that the bytes
/// are a curve point; decoding bcs does not, and the point is decompressed only when a
/// signature is verified (a key that is not a point verifies nothing). Decompression costs
/// about as much as half a signature check, and most decoded keys (a batch read back for
/// execution, whose address is a hash of the bytes) are never used to verify.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses 32 bytes, rejecting encodings that are not curve points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        VerifyingKey::from_bytes(bytes)
            .map(|_| PublicKey(*bytes))
            .map_err(|e| Error::InvalidPublicKey {
                reason: e.to_string(),
            })
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The compressed encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies `signature` over `content` in `domain` for `epoch` and `chain_id`.
    pub fn verify<T: Serialize + ?Sized>(
        &self,
        domain: Domain,
        epoch: Epoch,
        chain_id: ChainId,
        content: &T,
        signature: &Signature,
        what: &'static str,
    ) -> Result<()> {
        let msg = signing_message(domain, epoch, chain_id, content);
        self.verify_message(&msg, signature, what)
    }

    /// Verifies `signature` over an already computed [`signing_message`].
    pub fn verify_message(
        &self,
        message: &[u8; 32],
        signature: &Signature,
        what: &'static str,
    ) -> Result<()> {
        ed25519_consensus::VerificationKey::try_from(self.0)
            .and_then(|key| key.verify(&ed25519_consensus::Signature::from(signature.0), message))
            .map_err(|_| Error::InvalidSignature { what })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.as_bytes()[..4]))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| Error::InvalidPublicKey {
            reason: format!("expected 64 hex characters: {e}"),
        })?;
        PublicKey::from_bytes(&out)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.as_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    /// Any 32 bytes: the point is checked when the key verifies a signature.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        <[u8; 32]>::deserialize(d).map(PublicKey)
    }
}

/// An ed25519 signature (64 bytes, encoded as a fixed-size tuple).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

/// An ed25519 signing key with its public key.
pub struct KeyPair {
    secret: SigningKey,
}

impl KeyPair {
    /// A fresh key from a cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        KeyPair {
            secret: SigningKey::generate(rng),
        }
    }

    /// The key whose secret seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        KeyPair {
            secret: SigningKey::from_bytes(seed),
        }
    }

    /// The secret seed, for writing a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.secret.verifying_key().to_bytes())
    }

    /// Signs `content` in `domain` for `epoch` and `chain_id`.
    pub fn sign<T: Serialize + ?Sized>(
        &self,
        domain: Domain,
        epoch: Epoch,
        chain_id: ChainId,
        content: &T,
    ) -> Signature {
        self.sign_message(&signing_message(domain, epoch, chain_id, content))
    }

    /// Signs an already computed [`signing_message`].
    pub fn sign_message(&self, message: &[u8; 32]) -> Signature {
        Signature(self.secret.sign(message).to_bytes())
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({:?})", self.public())
    }
}

/// One signature to check: the signing message, the key and the signature.
#[derive(Debug, Clone, Copy)]
pub struct SignedMessage<'a> {
    /// The 32-byte [`signing_message`].
    pub message: &'a [u8; 32],
    /// The claimed signer.
    pub key: &'a PublicKey,
    /// The signature.
    pub signature: &'a Signature,
}

/// Verifies many signatures at once.
///
/// Returns `Ok(())` when all are valid. Otherwise returns the positions of the invalid ones,
/// found by checking one by one after the batch check failed.
pub fn verify_batch(items: &[SignedMessage<'_>]) -> std::result::Result<(), Vec<usize>> {
    match items {
        [] => return Ok(()),
        [one] => {
            return one
                .key
                .verify_message(one.message, one.signature, "batch item")
                .map_err(|_| vec![0]);
        }
        _ => {}
    }
    // The same rule as the single check (see the module documentation): if the batch holds,
    // every item would pass alone.
    let mut batch = ed25519_consensus::batch::Verifier::new();
    for i in items {
        batch.queue((
            ed25519_consensus::VerificationKeyBytes::from(*i.key.as_bytes()),
            ed25519_consensus::Signature::from(i.signature.0),
            &i.message[..],
        ));
    }
    // The coefficients must be unpredictable to whoever made the signatures: the thread-local
    // CSPRNG (ChaCha, seeded and periodically reseeded from the OS) is, and costs no system
    // call per signature as `OsRng` does.
    if batch.verify(rand::thread_rng()).is_ok() {
        return Ok(());
    }
    let bad: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.key
                .verify_message(i.message, i.signature, "batch item")
                .is_err()
        })
        .map(|(n, _)| n)
        .collect();
    if bad.is_empty() { Ok(()) } else { Err(bad) }
}
