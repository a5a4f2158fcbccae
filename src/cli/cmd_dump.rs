//! `cairn dump SNAPSHOT PATH [--archive tar|zip] [--target FILE]`

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{pick, Ctx, FilterArgs};
use cairn::dump::{dump_archive, dump_file, Archive, DumpSummary};
use cairn::repo::tree::NodeKind;
use cairn::restorer::find_node;
use cairn::{Error, Result};

#[derive(Args)]
pub struct DumpArgs {
    /// Snapshot: id, latest or @TIME.
    snapshot: String,
    /// An absolute path in the snapshot (`/` for all of it).
    path: String,
    /// A directory becomes this archive (tar keeps owners, hard links and special
    /// files; zip does not).
    #[arg(long, value_name = "tar|zip")]
    archive: Option<String>,
    /// Write to FILE (a new file) instead of stdout.
    #[arg(long, value_name = "FILE")]
    target: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: DumpArgs) -> Result<i32> {
    let archive: Option<Archive> = a.archive.as_deref().map(str::parse).transpose()?;
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let (_, snap) = pick(&repo, &a.snapshot, &a.filter)?;
    let path = if a.path.starts_with('/') {
        a.path.clone()
    } else {
        format!("/{}", a.path)
    };
    let node = find_node(&repo, snap.tree, &path)?;
    if !matches!(node.kind, NodeKind::File | NodeKind::Dir) {
        return Err(Error::Usage(format!(
            "{path} is a {} in the snapshot: dump writes files and directories",
            node.kind.name()
        )));
    }
    // A new file only: an existing one is never overwritten. The dump is written under
    // a temporary name beside it and linked to the name asked for once whole, so a
    // killed or failed dump never leaves a partial file under that name.
    if let Some(t) = &a.target {
        if std::fs::symlink_metadata(t).is_ok() {
            return Err(Error::Usage(format!(
                "--target {}: exists; dump writes a new file only",
                t.display()
            )));
        }
    }
    let partial = a.target.as_ref().map(|t| {
        let name = t.file_name().unwrap_or_default().to_string_lossy();
        t.with_file_name(format!(".{name}.cairn-dump-{}", std::process::id()))
    });
    let mut file = match &partial {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| Error::Usage(format!("--target {}: {e}", p.display())))?,
        ),
        None => None,
    };
    // Deep trees recurse deeply: the dump runs on a large stack, as restore's writers
    // do, and opens its output there.
    let result = super::on_large_stack("the dump", || {
        let stdout = std::io::stdout();
        let mut out: Box<dyn Write> = match file.as_mut() {
            Some(f) => Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
            None => Box::new(std::io::BufWriter::with_capacity(1 << 20, stdout.lock())),
        };
        let summary = write(&repo, &node, &path, archive, &mut *out)?;
        out.flush()
            .map_err(|e| Error::Other(format!("writing the dump: {e}")))?;
        Ok(summary)
    });
    let result = result.and_then(|s| match &file {
        Some(f) => f
            .sync_all()
            .map(|()| s)
            .map_err(|e| Error::Other(format!("writing the dump: {e}"))),
        None => Ok(s),
    });
    // Whole: linked to the name asked for (which fails if something appeared there
    // meanwhile), and the temporary name removed either way.
    let result = result.and_then(|s| match (&partial, &a.target) {
        (Some(p), Some(t)) => std::fs::hard_link(p, t)
            .map(|()| s)
            .map_err(|e| Error::Other(format!("--target {}: {e}", t.display()))),
        _ => Ok(s),
    });
    if let Some(p) = &partial {
        let _ = std::fs::remove_file(p);
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // The reader went away (`dump … | head`): not worth more than its exit.
            if a.target.is_none() && e.to_string().contains("Broken pipe") {
                return Ok(1);
            }
            return Err(e);
        }
    };
    if a.target.is_some() || ctx.g.verbose > 0 {
        eprintln!(
            "cairn: dumped {} files ({}), {} directories, {} other entries, {} hard links{}",
            summary.files,
            super::output::bytes(summary.bytes),
            summary.dirs,
            summary.others,
            summary.links,
            if summary.skipped > 0 {
                format!("; {} left out", summary.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(if summary.skipped > 0 { 3 } else { 0 })
}

fn write(
    repo: &cairn::Repository,
    node: &cairn::repo::tree::Node,
    path: &str,
    archive: Option<Archive>,
    out: &mut dyn Write,
) -> Result<DumpSummary> {
    match (node.kind, archive) {
        (NodeKind::File, None) => {
            let bytes = dump_file(repo, node, out)?;
            Ok(DumpSummary {
                files: 1,
                bytes,
                ..Default::default()
            })
        }
        (kind, archive) => {
            // A directory: tar unless asked otherwise; a file only when asked.
            let archive = archive.unwrap_or(Archive::Tar);
            let top = if kind == NodeKind::Dir && path == "/" {
                PathBuf::new()
            } else {
                PathBuf::from(Path::new(path).file_name().unwrap_or_default())
            };
            let mut warn = |w: String| eprintln!("warning: {w}");
            dump_archive(repo, node, &top, archive, out, &mut warn)
        }
    }
}
