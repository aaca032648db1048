//! Authentication digests (M2-124-UM §6.9, §6.10). The host sends a 16-byte nonce; the
//! client answers SHA-256(nonce ‖ secret) for a shared secret, SHA-256(nonce ‖ user ‖
//! password) for a user; strings as their UTF-8 bytes without terminator. Same layout in
//! amidi2net (`auth.c`) and Zephyr (`netmidi2_auth_session`).
use sha2::{Digest, Sha256};

use super::wire::{DIGEST_LEN, NONCE_LEN};
use crate::rng::Rng;

pub fn shared_secret_digest(nonce: &[u8; NONCE_LEN], secret: &str) -> [u8; DIGEST_LEN] {
    Sha256::new()
        .chain_update(nonce)
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
}

pub fn user_digest(nonce: &[u8; NONCE_LEN], user: &str, password: &str) -> [u8; DIGEST_LEN] {
    Sha256::new()
        .chain_update(nonce)
        .chain_update(user.as_bytes())
        .chain_update(password.as_bytes())
        .finalize()
        .into()
}

/// A fresh nonce. Printable ASCII as amidi2net makes them (some peers may print it); the seed
/// of `rng` must come from the OS for the nonce to be unpredictable.
pub fn nonce(rng: &mut Rng) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    for b in nonce.iter_mut() {
        *b = b' ' + rng.below(95) as u8;
    }
    nonce
}

/// Compares digests in time independent of where they differ.
pub fn digests_equal(a: &[u8; DIGEST_LEN], b: &[u8; DIGEST_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn digests_are_sha256_of_the_concatenation() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1, split as nonce-less inputs would be.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex(&Sha256::digest(b"abc")), abc);
        let nonce = *b"0123456789ABCDEF";
        let whole = Sha256::digest(b"0123456789ABCDEFsecret");
        assert_eq!(shared_secret_digest(&nonce, "secret")[..], whole[..]);
        let whole = Sha256::digest(b"0123456789ABCDEFalicepw");
        assert_eq!(user_digest(&nonce, "alice", "pw")[..], whole[..]);
        assert_ne!(
            user_digest(&nonce, "alice", "pw"),
            shared_secret_digest(&nonce, "alicepW")
        );
    }

    #[test]
    fn nonces_are_printable_and_differ() {
        let mut rng = Rng::new(1);
        let a = nonce(&mut rng);
        let b = nonce(&mut rng);
        assert_ne!(a, b);
        assert!(a.iter().all(|&c| (b' '..=b'~').contains(&c)));
        assert!(digests_equal(&[3; 32], &[3; 32]));
        assert!(!digests_equal(&[3; 32], &[4; 32]));
    }
}
