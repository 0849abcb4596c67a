//! One signature rule: a signature checked alone and the same signature checked in a batch get
//! the same answer. The crafted case: a signature whose commitment `R` carries a small-order
//! component. The cofactored batch equation cannot see that component, the cofactorless
//! single check (`verify_strict`) does: with two different rules, honest nodes verifying one
//! transaction alone and another in a batch would disagree on its validity.

use curve25519_dalek::{
    constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION},
    edwards::EdwardsPoint,
    scalar::Scalar,
};
use keel_types::{
    KeyPair, PublicKey, Signature,
    crypto::{SignedMessage, verify_batch},
};
use sha2::{Digest as _, Sha512};

fn hash_to_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// A signature by `seed`'s key over `message` whose `R` is the honest one plus the torsion
/// point `torsion` (0: an ordinary signature), with `s` computed for that `R`.
fn crafted(seed: &[u8; 32], message: &[u8], torsion: usize) -> (PublicKey, Signature) {
    let expanded: [u8; 64] = Sha512::digest(seed).into();
    let mut lower = [0u8; 32];
    lower.copy_from_slice(&expanded[..32]);
    lower[0] &= 248;
    lower[31] &= 127;
    lower[31] |= 64;
    let a = Scalar::from_bytes_mod_order(lower);
    let public: EdwardsPoint = ED25519_BASEPOINT_POINT * a;
    let r = hash_to_scalar(&[&expanded[32..], message]);
    let big_r = ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[torsion];
    let r_bytes = big_r.compress().to_bytes();
    let a_bytes = public.compress().to_bytes();
    let k = hash_to_scalar(&[&r_bytes, &a_bytes, message]);
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(&s.to_bytes());
    (PublicKey::from_bytes(&a_bytes).unwrap(), Signature(sig))
}

fn alone(key: &PublicKey, message: &[u8; 32], signature: &Signature) -> bool {
    key.verify_message(message, signature, "test").is_ok()
}

/// The answer for item 0 when it is checked in a batch with `others` (all valid).
fn in_batch(
    key: &PublicKey,
    message: &[u8; 32],
    signature: &Signature,
    others: &[(PublicKey, [u8; 32], Signature)],
) -> bool {
    let mut items = vec![SignedMessage {
        message,
        key,
        signature,
    }];
    items.extend(others.iter().map(|(k, m, s)| SignedMessage {
        message: m,
        key: k,
        signature: s,
    }));
    match verify_batch(&items) {
        Ok(()) => true,
        Err(bad) => {
            assert!(
                bad.iter().all(|i| *i == 0),
                "a valid signature was reported bad: {bad:?}"
            );
            false
        }
    }
}

#[test]
fn the_batch_and_the_single_check_accept_exactly_the_same_signatures() {
    let others: Vec<(PublicKey, [u8; 32], Signature)> = (0..5u8)
        .map(|i| {
            let key = KeyPair::from_seed(&[i + 100; 32]);
            let message = [i; 32];
            let (public, signature) = crafted(&key.seed(), &message, 0);
            assert_eq!(public, key.public());
            (public, message, signature)
        })
        .collect();
    let message = [7u8; 32];
    // The ordinary signature, and the same key's signatures with each small-order component.
    for torsion in 0..8 {
        let (key, signature) = crafted(&[9; 32], &message, torsion);
        let single = alone(&key, &message, &signature);
        let batched = in_batch(&key, &message, &signature, &others);
        assert_eq!(
            single, batched,
            "torsion {torsion}: alone {single}, in a batch {batched}"
        );
        if torsion == 0 {
            assert!(single, "an ordinary signature verifies");
        }
        // A wrong message fails both ways.
        let other = [8u8; 32];
        assert!(!alone(&key, &other, &signature));
        assert!(!in_batch(&key, &other, &signature, &others));
    }
}
