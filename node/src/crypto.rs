//! Encryption of case content at rest. Each subject's content is sealed
//! (AES-256-GCM) under a data key of its own; data keys are stored wrapped by
//! the node's master key, which lives outside the database (a file or an
//! environment variable). Destroying a data key makes every copy of that
//! content unreadable, including copies in backups taken before.

use crate::keydir::{KEY_LEN, KeyDir, StoredGeneration, decode_key};
use anyhow::{Context, anyhow, bail};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use zeroize::Zeroizing;

/// Marks a sealed outbox payload (a protobuf encoding never starts with 0).
pub const SEALED_PREFIX: &[u8] = b"\x00S1";

/// `N` bytes from the operating system's generator: the one source of
/// randomness for keys, secrets, identifiers and jitter.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow!("no randomness"))?;
    Ok(b)
}

/// SHA-256 of `b`.
pub fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

fn seal_with(key: &[u8], aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("bad key"))?);
    let nonce = random_bytes::<NONCE_LEN>()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| anyhow!("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend(buf);
    Ok(out)
}

fn open_with(key: &[u8], aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        bail!("sealed value too short");
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("bad key"))?);
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("bad nonce"))?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| anyhow!("the sealed value does not open (wrong key or altered)"))?;
    Ok(plain.to_vec())
}

/// Marks a value sealed under a numbered master-key generation: the marker,
/// then the generation (4 bytes, big-endian), then nonce, ciphertext and tag.
/// Values without it were sealed by nodes before generations, under the one
/// master key, which became generation 0.
const GENERATION_MARK: &[u8; 4] = b"EXg\x01";

fn header(generation: u32) -> Vec<u8> {
    let mut h = GENERATION_MARK.to_vec();
    h.extend(generation.to_be_bytes());
    h
}

/// The generation a sealed value names, and the rest; `None` for a value
/// sealed before generations.
fn split_header(sealed: &[u8]) -> Option<(u32, &[u8])> {
    let rest = sealed.strip_prefix(GENERATION_MARK.as_slice())?;
    if rest.len() < 4 + NONCE_LEN {
        return None;
    }
    let (n, body) = rest.split_at(4);
    let n: [u8; 4] = n.try_into().ok()?;
    Some((u32::from_be_bytes(n), body))
}

struct Generation {
    created_at_ms: i64,
    key: Zeroizing<[u8; KEY_LEN]>,
}

/// The node's master key: its generations, the newest of which (the
/// current one) seals; every one still held opens what was sealed under it.
/// Generations live in the key directory (`keys.dir`), never in the
/// database or the data directory; see `keys` for rotation and destruction.
pub struct MasterKey {
    generations: RwLock<BTreeMap<u32, Generation>>,
    dir: KeyDir,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// Where the master key comes from at start.
#[derive(Debug, Clone, Copy)]
pub struct KeySources<'a> {
    /// `master_key`: before generations, the one key; imported as generation 0.
    pub inline: Option<&'a str>,
    /// `master_key_file`: likewise.
    pub file: Option<&'a Path>,
    pub data_dir: &'a Path,
    /// `keys.dir`.
    pub key_dir: &'a Path,
    pub now_ms: i64,
}

/// Where nodes before generations kept their master key by default: inside
/// the data directory, so every data backup held it.
pub fn legacy_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("identity").join("master.key")
}

impl MasterKey {
    /// Opens the key directory (created, private, on first start). When it
    /// holds no generation yet, generation 0 is the master key of an older
    /// install (`master_key`, `master_key_file` or
    /// `<data_dir>/identity/master.key`, which is then moved out of the data
    /// directory) or else a new random key.
    pub fn load(src: KeySources<'_>) -> anyhow::Result<Self> {
        let dir = KeyDir::open(src.key_dir)?;
        let legacy_default = legacy_key_file(src.data_dir);
        let legacy: Option<(Zeroizing<[u8; KEY_LEN]>, String)> = if let Some(s) = src.inline {
            Some((
                Zeroizing::new(decode_key(s).context("master_key")?),
                "master_key".to_owned(),
            ))
        } else {
            let path = match src.file {
                Some(p) => Some(p.to_path_buf()),
                None => legacy_default.exists().then(|| legacy_default.clone()),
            };
            match path {
                Some(p) => {
                    if let Some(problem) = crate::keydir::too_open(&p) {
                        bail!("{problem}");
                    }
                    let text = Zeroizing::new(
                        std::fs::read_to_string(&p)
                            .with_context(|| format!("reading master key {}", p.display()))?,
                    );
                    let key =
                        decode_key(&text).with_context(|| format!("master key {}", p.display()))?;
                    Some((Zeroizing::new(key), p.display().to_string()))
                }
                None => None,
            }
        };
        let mut held = dir.load()?;
        if held.is_empty() {
            let (key, from) = match &legacy {
                Some((k, from)) => (k.clone(), Some(from.clone())),
                None => (Zeroizing::new(random_bytes::<KEY_LEN>()?), None),
            };
            dir.create(&StoredGeneration {
                number: 0,
                created_at_ms: src.now_ms,
                key,
            })?;
            match from {
                Some(from) => tracing::info!(
                    "the master key from {from} is generation 0 in the key directory {} now",
                    dir.path().display()
                ),
                None => tracing::info!(
                    "created the master key for case content at rest (generation 0) in {}",
                    dir.path().display()
                ),
            }
            held = dir.load()?;
        }
        // The old default file inside the data directory goes once the key
        // directory holds it, so data backups stop carrying the master key.
        if let Some((key, from)) = &legacy {
            match held.iter().find(|g| g.key.as_slice() == key.as_slice()) {
                Some(g) if src.inline.is_none() && src.file.is_none() => {
                    std::fs::remove_file(&legacy_default).with_context(|| {
                        format!("removing {} after copying it", legacy_default.display())
                    })?;
                    if let Some(parent) = legacy_default.parent() {
                        std::fs::File::open(parent)?.sync_all()?;
                    }
                    tracing::warn!(
                        "moved the master key out of the data directory: {from} is generation {} \
                         in the key directory {} now. Back the key directory up apart from the \
                         data; data backups taken before this start still hold the old key",
                        g.number,
                        dir.path().display()
                    );
                }
                Some(g) => tracing::warn!(
                    "{from} is generation {} in the key directory {} now; remove the setting \
                     (the node no longer needs it, and while it is set destroying that \
                     generation does not destroy it)",
                    g.number,
                    dir.path().display()
                ),
                None => tracing::warn!(
                    "{from} is not a master key generation in the key directory {} and is not \
                     used (its generation may have been destroyed); remove it",
                    dir.path().display()
                ),
            }
        }
        let me = Self {
            generations: RwLock::new(BTreeMap::new()),
            dir,
        };
        me.replace(held);
        Ok(me)
    }

    fn replace(&self, held: Vec<StoredGeneration>) {
        let map = held
            .into_iter()
            .map(|g| {
                (
                    g.number,
                    Generation {
                        created_at_ms: g.created_at_ms,
                        key: g.key,
                    },
                )
            })
            .collect();
        match self.generations.write() {
            Ok(mut g) => *g = map,
            Err(p) => *p.into_inner() = map,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Generation>> {
        match self.generations.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Reads the key directory again: generations another replica created
    /// or destroyed.
    pub fn reload(&self) -> anyhow::Result<()> {
        let held = self.dir.load()?;
        if held.is_empty() {
            bail!(
                "the key directory {} holds no master key generation any more",
                self.dir.path().display()
            );
        }
        self.replace(held);
        Ok(())
    }

    pub fn key_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `(number, created_at_ms)` of each generation held, oldest first.
    pub fn generations(&self) -> Vec<(u32, i64)> {
        self.read()
            .iter()
            .map(|(n, g)| (*n, g.created_at_ms))
            .collect()
    }

    /// The generation that seals.
    pub fn current_generation(&self) -> anyhow::Result<u32> {
        self.read()
            .keys()
            .next_back()
            .copied()
            .ok_or_else(|| anyhow!("no master key generation"))
    }

    fn current(&self) -> anyhow::Result<(u32, Zeroizing<[u8; KEY_LEN]>)> {
        self.read()
            .iter()
            .next_back()
            .map(|(n, g)| (*n, g.key.clone()))
            .ok_or_else(|| anyhow!("no master key generation"))
    }

    fn key_of(&self, generation: u32) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let found = self.read().get(&generation).map(|g| g.key.clone());
        if found.is_some() {
            return found;
        }
        // Another replica may have rotated since we last looked.
        self.reload().ok()?;
        self.read().get(&generation).map(|g| g.key.clone())
    }

    /// Makes a new generation current (`rotation`); the number it got.
    pub fn rotate(&self, now_ms: i64) -> anyhow::Result<u32> {
        let next = self
            .current_generation()?
            .checked_add(1)
            .context("generation number")?;
        let created = self.dir.create(&StoredGeneration {
            number: next,
            created_at_ms: now_ms,
            key: Zeroizing::new(random_bytes::<KEY_LEN>()?),
        })?;
        self.reload()?;
        if created {
            tracing::info!(
                generation = next,
                "rotated the master key: new content and rewrapped data keys are sealed under generation {next}"
            );
        }
        self.current_generation()
    }

    /// Deletes an older generation for good: whatever is still sealed under
    /// it, in the database or in any backup, can no longer be opened.
    pub fn destroy(&self, generation: u32) -> anyhow::Result<()> {
        if generation >= self.current_generation()? {
            bail!("generation {generation} is current; it cannot be destroyed");
        }
        self.dir.destroy(generation)?;
        self.reload()
    }

    /// The generation `sealed` names (0 for a value sealed before generations).
    pub fn generation_of(sealed: &[u8]) -> u32 {
        split_header(sealed).map(|(n, _)| n).unwrap_or(0)
    }

    fn seal_current(&self, aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (n, key) = self.current()?;
        let mut out = header(n);
        out.extend(seal_with(key.as_slice(), aad, plaintext)?);
        Ok(out)
    }

    fn open_any(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let marked = split_header(sealed);
        if let Some((n, body)) = marked
            && let Some(key) = self.key_of(n)
            && let Ok(plain) = open_with(key.as_slice(), aad, body)
        {
            return Ok(Zeroizing::new(plain));
        }
        // Sealed before generations (or, once in 2^32, an old value that
        // happens to begin with the mark): under generation 0.
        if let Some(key) = self.key_of(0)
            && let Ok(plain) = open_with(key.as_slice(), aad, sealed)
        {
            return Ok(Zeroizing::new(plain));
        }
        match marked {
            Some((n, _)) if self.read().get(&n).is_none() => bail!(
                "sealed under master key generation {n}, which this node no longer holds \
                 (destroyed after keys.backup_retention_days, or keys.dir is not this node's)"
            ),
            None if self.read().get(&0).is_none() => bail!(
                "sealed under master key generation 0, which this node no longer holds \
                 (destroyed after keys.backup_retention_days, or keys.dir is not this node's)"
            ),
            _ => bail!("the sealed value does not open (wrong key or altered)"),
        }
    }

    /// `sealed` again under the current generation, if it is under an older one.
    pub fn reseal(&self, aad: &str, sealed: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let current = self.current_generation()?;
        if split_header(sealed).is_some_and(|(n, _)| n == current) {
            return Ok(None);
        }
        let plain = self.open_any(aad.as_bytes(), sealed)?;
        Ok(Some(self.seal_current(aad.as_bytes(), &plain)?))
    }

    /// Seals directly under the master key (outbox payloads awaiting delivery).
    pub fn seal_direct(&self, aad: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.seal_current(aad.as_bytes(), plaintext)
    }

    pub fn open_direct(&self, aad: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self.open_any(aad.as_bytes(), sealed)?.to_vec())
    }

    /// A new data key, returned wrapped (for storage) under the current generation.
    pub fn new_wrapped_data_key(&self, key_id: &str) -> anyhow::Result<Vec<u8>> {
        let fresh = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        self.seal_current(key_id.as_bytes(), fresh.as_slice())
    }

    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        self.open_any(key_id.as_bytes(), wrapped)
    }

    /// Seals `plaintext` under the data key `wrapped` (id `key_id`), bound to `aad`.
    pub fn seal(
        &self,
        key_id: &str,
        wrapped: &[u8],
        aad: &str,
        plaintext: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        seal_with(&self.unwrap(key_id, wrapped)?, aad.as_bytes(), plaintext)
    }

    pub fn open(
        &self,
        key_id: &str,
        wrapped: &[u8],
        aad: &str,
        sealed: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        open_with(&self.unwrap(key_id, wrapped)?, aad.as_bytes(), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn sources<'a>(data: &'a Path, keys: &'a Path) -> KeySources<'a> {
        KeySources {
            inline: None,
            file: None,
            data_dir: data,
            key_dir: keys,
            now_ms: 1_000,
        }
    }

    #[test]
    fn seal_open_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let m = MasterKey::load(sources(&data, &keys)).unwrap();
        let again = MasterKey::load(sources(&data, &keys)).unwrap();
        let w = m.new_wrapped_data_key("subject-1").unwrap();
        let sealed = m
            .seal("subject-1", &w, "referral-1", b"needs trauma care")
            .unwrap();
        assert_eq!(
            again.open("subject-1", &w, "referral-1", &sealed).unwrap(),
            b"needs trauma care"
        );
        // Bound to its row and its key: moved elsewhere it does not open.
        assert!(m.open("subject-1", &w, "referral-2", &sealed).is_err());
        assert!(m.open("subject-2", &w, "referral-1", &sealed).is_err());
        let other_keys = dir.path().join("other");
        let other = MasterKey::load(KeySources {
            inline: Some(&STANDARD.encode([7u8; 32])),
            ..sources(&data, &other_keys)
        })
        .unwrap();
        assert!(other.open("subject-1", &w, "referral-1", &sealed).is_err());
        assert!(!format!("{m:?}").contains('7'));
        assert!(
            MasterKey::load(KeySources {
                inline: Some("short"),
                ..sources(&data, &dir.path().join("third"))
            })
            .is_err()
        );
    }

    #[test]
    fn rotation_reseals_and_destruction_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let m = MasterKey::load(sources(&data, &keys)).unwrap();
        let w0 = m.new_wrapped_data_key("k").unwrap();
        let n0 = m.seal_direct("notice", b"queued").unwrap();
        assert_eq!(MasterKey::generation_of(&w0), 0);
        assert_eq!(m.rotate(2_000).unwrap(), 1);
        // Old values still open; new ones are under generation 1.
        let sealed = m.seal("k", &w0, "r", b"content").unwrap();
        assert_eq!(
            MasterKey::generation_of(&m.new_wrapped_data_key("j").unwrap()),
            1
        );
        let w1 = m.reseal("k", &w0).unwrap().unwrap();
        assert_eq!(MasterKey::generation_of(&w1), 1);
        assert!(m.reseal("k", &w1).unwrap().is_none());
        let n1 = m.reseal("notice", &n0).unwrap().unwrap();
        assert_eq!(m.open("k", &w1, "r", &sealed).unwrap(), b"content");
        // A second process on the same key directory sees the rotation.
        let replica = MasterKey::load(sources(&data, &keys)).unwrap();
        assert_eq!(replica.current_generation().unwrap(), 1);
        assert!(m.destroy(1).is_err(), "the current generation stays");
        m.destroy(0).unwrap();
        let e = m.open("k", &w0, "r", &sealed).unwrap_err().to_string();
        assert!(
            e.contains("generation 0") && e.contains("no longer holds"),
            "{e}"
        );
        assert!(m.open_direct("notice", &n0).is_err());
        assert_eq!(m.open_direct("notice", &n1).unwrap(), b"queued");
        assert_eq!(m.open("k", &w1, "r", &sealed).unwrap(), b"content");
        // The replica learns of the destruction when it next looks.
        replica.reload().unwrap();
        assert!(replica.open("k", &w0, "r", &sealed).is_err());
        assert_eq!(replica.generations().len(), 1);
    }

    #[test]
    fn the_old_default_key_in_the_data_dir_becomes_generation_0_and_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        // As nodes before generations wrote it.
        crate::identity::create_private_dir(&data.join("identity")).unwrap();
        let old = [9u8; KEY_LEN];
        crate::identity::write_private(&legacy_key_file(&data), STANDARD.encode(old).as_bytes())
            .unwrap();
        let wrapped_before = seal_with(&old, b"k", &[5u8; KEY_LEN]).unwrap();
        let m = MasterKey::load(sources(&data, &keys)).unwrap();
        assert!(!legacy_key_file(&data).exists());
        assert_eq!(m.generations(), vec![(0, 1_000)]);
        let sealed = m.seal("k", &wrapped_before, "r", b"x").unwrap();
        assert_eq!(m.open("k", &wrapped_before, "r", &sealed).unwrap(), b"x");
        assert!(m.reseal("k", &wrapped_before).unwrap().is_some());
    }
}
