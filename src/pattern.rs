//! Path patterns for `--exclude` (backup) and `--include`/`--exclude` (restore),
//! with restic's meaning: a pattern that starts with `/` matches the whole absolute
//! path, any other pattern the path's trailing components (`*.tmp` matches
//! `/a/b/x.tmp`). `*` and `?` stay within one component; `**` crosses them.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct PatternSet(GlobSet);

impl PatternSet {
    /// Patterns, each with whether it ignores case.
    pub fn new<'a>(patterns: impl IntoIterator<Item = (&'a str, bool)>) -> Result<PatternSet> {
        let mut b = GlobSetBuilder::new();
        for (pat, case_insensitive) in patterns {
            let pat = pat.trim_end_matches('/');
            if pat.is_empty() {
                continue;
            }
            let full = if pat.starts_with('/') {
                pat.to_string()
            } else {
                format!("**/{pat}")
            };
            let glob = GlobBuilder::new(&full)
                .literal_separator(true)
                .case_insensitive(case_insensitive)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Usage(format!("bad pattern {pat:?}: {e}")))?;
            b.add(glob);
        }
        b.build()
            .map(PatternSet)
            .map_err(|e| Error::Usage(format!("bad patterns: {e}")))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_match(&self, path: &Path) -> bool {
        !self.0.is_empty() && self.0.is_match(path)
    }

    /// The path or one of its ancestors matches.
    pub fn matches_self_or_ancestor(&self, path: &Path) -> bool {
        !self.0.is_empty()
            && path
                .ancestors()
                .any(|p| p != Path::new("/") && self.0.is_match(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> PatternSet {
        PatternSet::new(p.iter().map(|s| (*s, false))).unwrap()
    }

    #[test]
    fn restic_like_matching() {
        let e = set(&["*.tmp", "/srv/data/cache", "logs/*.log"]);
        assert!(e.is_match(Path::new("/a/b/x.tmp")));
        assert!(!e.is_match(Path::new("/a/b/x.tmp2")));
        assert!(e.is_match(Path::new("/srv/data/cache")));
        assert!(!e.is_match(Path::new("/other/srv/data/cache")));
        assert!(e.is_match(Path::new("/var/logs/a.log")));
        assert!(!e.is_match(Path::new("/var/logs/sub/a.log")));
        assert!(e.matches_self_or_ancestor(Path::new("/srv/data/cache/deep/file")));
        assert!(!set(&[]).is_match(Path::new("/x")));
        let i = PatternSet::new([("*.BAK", true)]).unwrap();
        assert!(i.is_match(Path::new("/x/y.bak")));
    }
}
