//! Key files (`keys/<id>`): the master key sealed under one password.
//!
//! Plain JSON, since it must be read before any key is known. Each holds its own
//! Argon2id cost, so an old key keeps working after the default cost is raised.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{aad, random_bytes, KdfParams, MasterKey, SealingKey};
use crate::error::{Error, Result};

pub const KEY_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub username: String,
    pub hostname: String,
    /// Always "argon2id" in version 1.
    pub kdf: String,
    pub kdf_params: KdfParams,
    /// 16 random bytes, hex.
    pub salt: String,
    /// The 32-byte master secret, sealed with the password-derived key, hex.
    pub sealed_master_key: String,
    /// The file's name (`keys/<name>`), for messages; not stored.
    #[serde(skip)]
    pub name: String,
}

impl KeyFile {
    pub fn create(master: &MasterKey, password: &[u8], params: KdfParams) -> Result<KeyFile> {
        let salt: [u8; 16] = random_bytes();
        let k = params.derive(password, &salt)?;
        let sealed = SealingKey::new(&k).seal(aad::KEY, master.secret());
        Ok(KeyFile {
            version: KEY_VERSION,
            created: Utc::now(),
            username: crate::fsmeta::current_username(),
            hostname: crate::fsmeta::hostname(),
            kdf: "argon2id".into(),
            kdf_params: params,
            salt: hex::encode(salt),
            sealed_master_key: hex::encode(sealed),
            name: String::new(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn decode(bytes: &[u8], name: &str) -> Result<KeyFile> {
        let file = format!("keys/{name}");
        let mut k: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| Error::integrity(&file, e.to_string()))?;
        k.name = name.to_string();
        if k.version > KEY_VERSION || k.kdf != "argon2id" {
            return Err(Error::Unsupported(format!(
                "{file} uses key format {} / {}, which this cairn does not know; upgrade cairn",
                k.version, k.kdf
            )));
        }
        Ok(k)
    }

    /// The master key, or `None` when the password is not this key's.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let bad = |d: &str| Error::integrity("key file", d.to_string());
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt is not hex"))?;
        let sealed = hex::decode(&self.sealed_master_key).map_err(|_| bad("key is not hex"))?;
        // Refuse absurd costs from a hostile file before Argon2 allocates them.
        self.kdf_params.validate(&format!("keys/{}", self.name))?;
        let k = self.kdf_params.derive(password, &salt)?;
        match SealingKey::new(&k).open(aad::KEY, &sealed) {
            Ok(secret) => {
                // The plaintext master secret is wiped when this buffer drops.
                let secret = zeroize::Zeroizing::new(secret);
                MasterKey::from_secret_slice(&secret)
                    .map(Some)
                    .ok_or_else(|| bad("master key has the wrong length"))
            }
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn right_password_opens_wrong_does_not() {
        let m = MasterKey::generate();
        let kf = KeyFile::create(&m, b"pw", CHEAP).unwrap();
        let back = KeyFile::decode(&kf.encode(), "x").unwrap();
        assert_eq!(back.open(b"pw").unwrap().unwrap().secret(), m.secret());
        assert!(back.open(b"nope").unwrap().is_none());
    }

    #[test]
    fn newer_version_refused() {
        let m = MasterKey::generate();
        let mut kf = KeyFile::create(&m, b"pw", CHEAP).unwrap();
        kf.version = 99;
        assert!(matches!(
            KeyFile::decode(&kf.encode(), "x"),
            Err(Error::Unsupported(_))
        ));
    }
}
