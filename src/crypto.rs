//! Encryption and key derivation. No I/O.
//!
//! Every stored object is sealed with XChaCha20-Poly1305 under a key derived from the
//! repository master key: `nonce (24 random bytes) || ciphertext || tag (16 bytes)`.
//! The associated data names the kind of object, so a valid index file cannot be
//! passed off as a snapshot. Passwords become keys with Argon2id.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::id::IdKey;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object has beyond its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Associated data, one per kind of sealed object (see docs/format.md).
pub mod aad {
    pub const KEY: &[u8] = b"cairn.key.v1";
    pub const CONFIG: &[u8] = b"cairn.config.v1";
    pub const SNAPSHOT: &[u8] = b"cairn.snapshot.v1";
    pub const INDEX: &[u8] = b"cairn.index.v1";
    pub const PACK_HEADER: &[u8] = b"cairn.pack-header.v1";
    pub const BLOB: &[u8] = b"cairn.blob.v1";
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the operating system has no random source");
    b
}

/// Random bytes that need not stay secret (nonces, temporary names), served from a
/// per-thread block of the operating system's randomness: one `getrandom` call per
/// 170 nonces instead of one per blob. Bytes are handed out once and wiped as they go.
/// cairn never forks without exec (children are spawned), so no copy of a block is
/// ever handed out twice; a process that did fork would have to empty it first.
pub fn public_random<const N: usize>() -> [u8; N] {
    use std::cell::RefCell;
    const BLOCK: usize = 4096;
    thread_local! {
        static POOL: RefCell<(Box<[u8; BLOCK]>, usize)> = RefCell::new((Box::new([0; BLOCK]), BLOCK));
    }
    assert!(N <= BLOCK);
    POOL.with(|p| {
        let (buf, used) = &mut *p.borrow_mut();
        if BLOCK - *used < N {
            getrandom::getrandom(&mut buf[..]).expect("the operating system has no random source");
            *used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&buf[*used..*used + N]);
        buf[*used..*used + N].fill(0);
        *used += N;
        out
    })
}

/// The authentication failure of `SealingKey::open`; callers name the file.
#[derive(Debug)]
pub struct Unauthentic;

/// An XChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct SealingKey(XChaCha20Poly1305);

impl SealingKey {
    pub fn new(key: &[u8; 32]) -> Self {
        SealingKey(XChaCha20Poly1305::new(key.into()))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Appends the sealed form of `plaintext` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = public_random();
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
            .expect("plaintext within XChaCha20 limits");
        out.extend_from_slice(&tag);
    }

    /// As `open`, decrypting where the bytes lie: returns the plaintext, a part of
    /// `sealed`, whose content is unspecified when authentication fails.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], Unauthentic> {
        if sealed.len() < OVERHEAD {
            return Err(Unauthentic);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (ct, tag) = rest.split_at_mut(rest.len() - (OVERHEAD - NONCE_LEN));
        self.0
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, ct, (&*tag).into())
            .map_err(|_| Unauthentic)?;
        Ok(ct)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        if sealed.len() < OVERHEAD {
            return Err(Unauthentic);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| Unauthentic)
    }
}

/// The repository master key: 32 random bytes from which every working key is derived
/// with BLAKE3's key derivation, so one secret is sealed per password.
pub struct MasterKey {
    secret: Zeroizing<[u8; 32]>,
    pub sealing: SealingKey,
    pub id_key: IdKey,
    pub chunker_seed: u64,
}

impl MasterKey {
    pub fn generate() -> Self {
        Self::from_secret(random_bytes())
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self::from_zeroizing(Zeroizing::new(secret))
    }

    /// From a decrypted secret, copied straight into zeroized memory; `None` when it
    /// is not 32 bytes.
    pub fn from_secret_slice(secret: &[u8]) -> Option<Self> {
        let mut s = Zeroizing::new([0u8; 32]);
        if secret.len() != 32 {
            return None;
        }
        s.copy_from_slice(secret);
        Some(Self::from_zeroizing(s))
    }

    fn from_zeroizing(secret: Zeroizing<[u8; 32]>) -> Self {
        let enc = Zeroizing::new(blake3::derive_key("cairn v1 encryption key", &*secret));
        let id = blake3::derive_key("cairn v1 blob id key", &*secret);
        let seed = blake3::derive_key("cairn v1 chunker gear seed", &*secret);
        MasterKey {
            sealing: SealingKey::new(&enc),
            id_key: IdKey::new(id),
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().unwrap()),
            secret,
        }
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// Argon2id cost, stored in each key file so it can differ per key and grow over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 48 MiB and 6 passes: a guessing machine pays more per guess than for the earlier
    /// 64 MiB × 3 both in area × time (memory² × passes: 13 824 against 12 288) and in
    /// memory traffic (288 against 192 MiB-passes), in about the same time here, and a
    /// command whose own work needs less memory peaks 16 MiB lower. OWASP's floor is
    /// 19 MiB × 2.
    fn default() -> Self {
        KdfParams {
            memory_kib: 48 * 1024,
            iterations: 6,
            parallelism: 1,
        }
    }
}

/// The largest Argon2id cost cairn derives with: 2 GiB, 64 passes, 64 lanes. Far above
/// any sane setting (the default is 48 MiB / 6 / 1), low enough that a hostile key file
/// cannot make every `open` allocate 4 GiB and spin for minutes.
pub const KDF_MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
pub const KDF_MAX_ITERATIONS: u32 = 64;
pub const KDF_MAX_PARALLELISM: u32 = 64;

/// OWASP's Argon2id rows (memory KiB, passes), parallelism 1: a new key weaker than
/// all of them gets a warning (the cheap test setting stays allowed).
const OWASP_ROWS: [(u32, u32); 5] = [
    (47_104, 1),
    (19_456, 2),
    (12_288, 3),
    (9_216, 4),
    (7_168, 5),
];

impl KdfParams {
    /// Refuses a cost outside cairn's limits (or below Argon2's own minimums) before
    /// anything is allocated; `what` names the key file or option.
    pub fn validate(&self, what: &str) -> Result<()> {
        let ok = (1..=KDF_MAX_PARALLELISM).contains(&self.parallelism)
            && (1..=KDF_MAX_ITERATIONS).contains(&self.iterations)
            && self.memory_kib <= KDF_MAX_MEMORY_KIB
            && self.memory_kib >= 8 * self.parallelism;
        if ok {
            return Ok(());
        }
        Err(Error::Unsupported(format!(
            "{what}: Argon2id cost memory {} KiB, {} passes, {} lanes is outside cairn's limits (at most {KDF_MAX_MEMORY_KIB} KiB, {KDF_MAX_ITERATIONS} passes, {KDF_MAX_PARALLELISM} lanes); refusing to derive a key with it",
            self.memory_kib, self.iterations, self.parallelism
        )))
    }

    /// True when the cost is below every OWASP Argon2id recommendation.
    pub fn below_owasp(&self) -> bool {
        !OWASP_ROWS
            .iter()
            .any(|&(m, t)| self.memory_kib >= m && self.iterations >= t)
    }

    /// Turns a password into a 32-byte key-sealing key.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.validate("Argon2id parameters")?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Usage(format!("invalid Argon2id parameters: {e}")))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, salt, &mut *out)
            .map_err(|e| Error::Other(format!("Argon2id failed: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_open_round_trip() {
        let k = SealingKey::new(&[7; 32]);
        let s = k.seal(aad::BLOB, b"secret");
        assert_eq!(s.len(), 6 + OVERHEAD);
        assert_eq!(k.open(aad::BLOB, &s).unwrap(), b"secret");
        assert!(k.open(aad::INDEX, &s).is_err(), "wrong associated data");
        assert!(SealingKey::new(&[8; 32]).open(aad::BLOB, &s).is_err());
        assert!(k.open(aad::BLOB, &s[..10]).is_err());
        let mut in_place = s.clone();
        assert_eq!(
            k.open_in_place(aad::BLOB, &mut in_place).unwrap(),
            b"secret"
        );
        for (i, bit) in [(0, 1), (NONCE_LEN, 0x80), (s.len() - 1, 4)] {
            let mut flipped = s.clone();
            flipped[i] ^= bit;
            assert!(
                k.open_in_place(aad::BLOB, &mut flipped).is_err(),
                "byte {i}"
            );
        }
        assert!(k.open_in_place(aad::INDEX, &mut s.clone()).is_err());
        assert!(k
            .open_in_place(aad::BLOB, &mut s[..OVERHEAD - 1].to_vec())
            .is_err());
    }

    #[test]
    fn kdf_depends_on_password_and_salt() {
        let p = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let a = p.derive(b"pw", b"saltsaltsaltsalt").unwrap();
        assert_eq!(*a, *p.derive(b"pw", b"saltsaltsaltsalt").unwrap());
        assert_ne!(*a, *p.derive(b"pw2", b"saltsaltsaltsalt").unwrap());
        assert_ne!(*a, *p.derive(b"pw", b"saltsaltsaltsal2").unwrap());
    }

    /// Known answers from argon2 0.5.3 (lanes one after another) and from the reference
    /// C implementation (argon2-cffi's `hash_secret_raw`, type ID), which agree: with
    /// lanes derived in parallel, every key file written before must still open.
    #[test]
    fn kdf_gives_the_reference_key_for_one_and_several_lanes() {
        let got = |l| {
            let p = KdfParams {
                memory_kib: 1024,
                iterations: 3,
                parallelism: l,
            };
            hex::encode(*p.derive(b"cairn", b"0123456789abcdef").unwrap())
        };
        let want = [
            (
                1,
                "bc7896dbb1d0f33a725ab15c1d644827902d465b15f74b47068d5e4dee35bdea",
            ),
            (
                2,
                "48a6cb9b70668c1e820d914421c004cfa8639884621f0a7d0d177ae18cdbd20a",
            ),
            (
                4,
                "f21b7ee0284dbb8ef2186b2a6c177bbd7437728cd9dd795e1e19cfd38276b7aa",
            ),
        ];
        for (lanes, key) in want {
            assert_eq!(got(lanes), key, "{lanes} lanes");
        }
    }

    #[test]
    fn kdf_limits_and_owasp_floor() {
        let p = |m, t, l| KdfParams {
            memory_kib: m,
            iterations: t,
            parallelism: l,
        };
        assert!(KdfParams::default().validate("x").is_ok());
        assert!(!KdfParams::default().below_owasp());
        assert!(p(KDF_MAX_MEMORY_KIB, KDF_MAX_ITERATIONS, 1)
            .validate("x")
            .is_ok());
        for bad in [
            p(KDF_MAX_MEMORY_KIB + 1, 1, 1),
            p(64, KDF_MAX_ITERATIONS + 1, 1),
            p(64 * 65, 1, KDF_MAX_PARALLELISM + 1),
            p(64, 0, 1),
            p(64, 1, 0),
            p(7, 1, 1),
        ] {
            assert!(bad.validate("x").is_err(), "{bad:?}");
            assert!(bad.derive(b"pw", b"saltsaltsaltsalt").is_err(), "{bad:?}");
        }
        assert!(p(64, 1, 1).below_owasp());
        assert!(p(19_455, 2, 1).below_owasp());
        assert!(!p(19_456, 2, 1).below_owasp());
        assert!(!p(47_104, 1, 1).below_owasp());
        assert!(!p(7_168, 5, 1).below_owasp());
    }

    proptest! {
        #[test]
        fn any_flipped_byte_is_rejected(data in proptest::collection::vec(any::<u8>(), 0..300), pos in any::<usize>(), bit in 0u8..8) {
            let k = SealingKey::new(&[3; 32]);
            let mut s = k.seal(aad::SNAPSHOT, &data);
            prop_assert_eq!(k.open(aad::SNAPSHOT, &s).unwrap(), data);
            let i = pos % s.len();
            s[i] ^= 1 << bit;
            prop_assert!(k.open(aad::SNAPSHOT, &s).is_err());
        }
    }
}
