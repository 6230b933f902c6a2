//! The key directory: one file per master-key generation, kept apart from the
//! data directory and the database, so that the backups of those never hold
//! a key, and destroying a generation (deleting its file) is not undone by
//! any data backup. Files are written whole (temporary file, fsync, link
//! under the final name so that two replicas cannot both create one
//! generation, fsync of the directory) and are readable by the owner only.

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;

/// One generation as stored.
pub struct StoredGeneration {
    pub number: u32,
    pub created_at_ms: i64,
    pub key: Zeroizing<[u8; KEY_LEN]>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    generation: u32,
    created_at_ms: i64,
    key: String,
}

// The key in base64 is as secret as the key: wiped when dropped.
impl Drop for File {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// A temporary file of a generation being written: `.generation-N.…tmp`.
fn temporary_of(name: &str) -> Option<u32> {
    name.strip_prefix(".generation-")?
        .strip_suffix(".tmp")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[derive(Debug, Clone)]
pub struct KeyDir {
    path: PathBuf,
}

/// What a group or other bit on a key file or the key directory means, and
/// the command that fixes it; `None` when it is private.
pub fn too_open(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    let fix = if meta.is_dir() { "0700" } else { "0600" };
    Some(format!(
        "{} is readable or writable by group or others (mode {mode:04o}); the master key must \
         be the node's alone: chmod {fix} {}",
        path.display(),
        path.display()
    ))
}

impl KeyDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, number: u32) -> PathBuf {
        self.path.join(format!("generation-{number:06}.key"))
    }

    /// Creates the directory (mode 0700) if missing; refuses one, or a key
    /// file in it, that group or others can open.
    pub fn open(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = Self::new(path);
        crate::identity::create_private_dir(&dir.path)?;
        if let Some(problem) = too_open(&dir.path) {
            bail!("{problem}");
        }
        Ok(dir)
    }

    /// Every generation held, oldest first.
    pub fn load(&self) -> anyhow::Result<Vec<StoredGeneration>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.path)
            .with_context(|| format!("reading the key directory {}", self.path.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if temporary_of(name).is_some() {
                // Left by a crash while a generation was written (a writer
                // removes its own within moments): it holds a key, and
                // destroying the generation must not leave it behind.
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(60));
                if stale {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            if !(name.starts_with("generation-") && name.ends_with(".key")) {
                continue;
            }
            let path = entry.path();
            if let Some(problem) = too_open(&path) {
                bail!("{problem}");
            }
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
            let f: File = serde_json::from_str(&text)
                .map_err(|_| anyhow!("{}: not a master key generation file", path.display()))?;
            if path != self.file(f.generation) {
                bail!("{}: holds generation {}", path.display(), f.generation);
            }
            let key =
                Zeroizing::new(decode_key(&f.key).with_context(|| path.display().to_string())?);
            out.push(StoredGeneration {
                number: f.generation,
                created_at_ms: f.created_at_ms,
                key,
            });
        }
        out.sort_by_key(|g| g.number);
        Ok(out)
    }

    /// Stores a new generation; `false` if the number was taken meanwhile
    /// (another replica rotated first).
    pub fn create(&self, g: &StoredGeneration) -> anyhow::Result<bool> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = Zeroizing::new(serde_json::to_string(&File {
            generation: g.number,
            created_at_ms: g.created_at_ms,
            key: STANDARD.encode(g.key.as_slice()),
        })?);
        let final_path = self.file(g.number);
        let tmp = self.path.join(format!(
            ".generation-{:06}.{}.tmp",
            g.number,
            uuid::Uuid::new_v4()
        ));
        let written = (|| -> anyhow::Result<bool> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            // A hard link fails if the name exists: never two keys for one number.
            match std::fs::hard_link(&tmp, &final_path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e).with_context(|| format!("writing {}", final_path.display())),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        let created = written?;
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(created)
    }

    /// Deletes a generation's file for good (and syncs the directory, so a
    /// crash does not bring it back).
    pub fn destroy(&self, number: u32) -> anyhow::Result<()> {
        // A temporary copy a crash left behind goes too.
        for entry in std::fs::read_dir(&self.path)?.flatten() {
            if entry.file_name().to_str().and_then(temporary_of) == Some(number) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("deleting {}", entry.path().display()))?;
            }
        }
        let path = self.file(number);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("deleting {}", path.display())),
        }
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(())
    }
}

pub fn decode_key(text: &str) -> anyhow::Result<[u8; KEY_LEN]> {
    let b = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| anyhow!("not base64"))?,
    );
    b.as_slice()
        .try_into()
        .map_err(|_| anyhow!("must be 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_once_load_destroy_and_refuse_open_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = KeyDir::open(tmp.path().join("keys")).unwrap();
        let g = |n, k| StoredGeneration {
            number: n,
            created_at_ms: 1000 * i64::from(n),
            key: Zeroizing::new([k; KEY_LEN]),
        };
        assert!(dir.create(&g(0, 1)).unwrap());
        assert!(dir.create(&g(1, 2)).unwrap());
        // A second writer of generation 1 loses; the first key stays.
        assert!(!dir.create(&g(1, 3)).unwrap());
        let held = dir.load().unwrap();
        assert_eq!(held.iter().map(|g| g.number).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(*held[1].key, [2; KEY_LEN]);
        assert_eq!(held[1].created_at_ms, 1000);
        // A crash while generation 0 was written left a copy: destroying
        // generation 0 deletes it too; another generation's is kept.
        let left = dir.path().join(".generation-000000.1234.tmp");
        std::fs::write(&left, "key").unwrap();
        let other = dir.path().join(".generation-000007.1234.tmp");
        std::fs::write(&other, "key").unwrap();
        assert_eq!(temporary_of(".generation-000007.1234.tmp"), Some(7));
        assert_eq!(temporary_of("generation-000007.key"), None);
        dir.destroy(0).unwrap();
        assert!(!left.exists());
        std::fs::remove_file(&other).unwrap();
        dir.destroy(0).unwrap();
        assert_eq!(dir.load().unwrap().len(), 1);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let file = dir.path().join("generation-000001.key");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = dir.load().err().unwrap().to_string();
        assert!(
            e.contains("chmod 0600") && e.contains("generation-000001.key"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = KeyDir::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("chmod 0700"), "{e}");
    }
}
