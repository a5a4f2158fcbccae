//! Which source paths a backup leaves out: `--exclude`/`--iexclude` patterns
//! (`crate::pattern`, restic's rules), marker files and cache directories. An excluded
//! directory is not descended into.

use std::path::Path;

use crate::error::{Error, Result};
use crate::pattern::PatternSet;

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

#[derive(Default)]
pub struct ExcludeOptions {
    pub exclude: Vec<String>,
    pub iexclude: Vec<String>,
    pub exclude_files: Vec<std::path::PathBuf>,
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: bool,
}

pub struct Excluder {
    patterns: PatternSet,
    if_present: Vec<String>,
    caches: bool,
}

impl Excluder {
    pub fn new(o: &ExcludeOptions) -> Result<Excluder> {
        let mut lines = Vec::new();
        for f in &o.exclude_files {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io_path(f, e))?;
            lines.extend(
                text.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with('#')),
            );
        }
        let patterns = o
            .exclude
            .iter()
            .chain(&lines)
            .map(|p| (p.as_str(), false))
            .chain(o.iexclude.iter().map(|p| (p.as_str(), true)));
        Ok(Excluder {
            patterns: PatternSet::new(patterns)?,
            if_present: o.exclude_if_present.clone(),
            caches: o.exclude_caches,
        })
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        self.patterns.is_match(path)
    }

    /// For a directory: the name of the marker file that keeps its other contents out
    /// (`--exclude-if-present`, `--exclude-caches`), if it has one.
    pub fn marker_in(&self, dir: &Path) -> Option<String> {
        for name in &self.if_present {
            if dir.join(name).symlink_metadata().is_ok() {
                return Some(name.clone());
            }
        }
        if self.caches && has_cachedir_signature(&dir.join("CACHEDIR.TAG")) {
            return Some("CACHEDIR.TAG".into());
        }
        None
    }
}

/// Whether `tag` is a regular file starting with the CACHEDIR.TAG signature: opened
/// without following a symlink and without blocking on a FIFO, and only the signature's
/// length read (a tag that is a symlink to /dev/zero must not fill the memory).
fn has_cachedir_signature(tag: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(tag)
    else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    f.take(CACHEDIR_SIGNATURE.len() as u64)
        .read_to_end(&mut head)
        .is_ok()
        && head == CACHEDIR_SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".nobackup"), b"").unwrap();
        let e = Excluder::new(&ExcludeOptions {
            exclude_if_present: vec![".nobackup".into()],
            exclude_caches: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(e.marker_in(d.path()).as_deref(), Some(".nobackup"));
        let c = tempfile::tempdir().unwrap();
        std::fs::write(c.path().join("CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        assert_eq!(e.marker_in(c.path()).as_deref(), Some("CACHEDIR.TAG"));
        let n = tempfile::tempdir().unwrap();
        std::fs::write(n.path().join("CACHEDIR.TAG"), b"not a tag").unwrap();
        assert_eq!(e.marker_in(n.path()), None);
    }
}
