//! `cairn mount MOUNTPOINT`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use fuser::{Config, MountOption, SessionACL};

use super::Ctx;
use cairn::mount::{CairnFs, MountOptions};
use cairn::{Error, Result};

#[derive(Args)]
pub struct MountArgs {
    /// An empty directory to mount the repository on.
    mountpoint: PathBuf,
    /// MiB of file data kept in memory for readers (random reads, readahead).
    #[arg(long, value_name = "MiB", default_value_t = 128)]
    blob_cache: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(ctx: &Ctx, a: MountArgs) -> Result<i32> {
    if !(16..=1 << 20).contains(&a.blob_cache) {
        return Err(Error::Usage(format!(
            "--blob-cache {}: expected 16 to 1048576 (MiB)",
            a.blob_cache
        )));
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        return Err(Error::Other(
            "FUSE is not available here: /dev/fuse is missing (install fuse3 and load the fuse module)"
                .into(),
        ));
    }
    let mp = &a.mountpoint;
    match std::fs::read_dir(mp).map(|mut rd| rd.next().is_none()) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Usage(format!(
                "mount point {} is not empty (or is mounted already)",
                mp.display()
            )))
        }
        Err(e) => {
            return Err(Error::Usage(format!(
                "mount point {}: {e} (it must be an existing empty directory)",
                mp.display()
            )))
        }
    }
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let opts = MountOptions {
        blob_cache: (a.blob_cache as usize) << 20,
    };
    let mount = |auto_unmount: bool| {
        let mut options = vec![
            MountOption::RO,
            MountOption::FSName("cairn".into()),
            MountOption::Subtype("cairn".into()),
        ];
        if auto_unmount {
            options.push(MountOption::AutoUnmount);
        }
        let mut config = Config::default();
        config.mount_options = options;
        // AutoUnmount needs allow_root (root may always set it).
        config.acl = if auto_unmount {
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        // Several requests at once: two readers never wait on each other.
        config.n_threads = Some(4);
        config.clone_fd = true;
        config
    };
    let fs = CairnFs::new(repo, &opts)?;
    // With AutoUnmount a killed cairn leaves no stale mount; a user without
    // allow_other in /etc/fuse.conf cannot have it: then mount without, and say so.
    let session = match fuser::spawn_mount(fs, mp, &mount(true)) {
        Ok(s) => s,
        Err(first) => {
            let (repo, _) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
            let fs = CairnFs::new(repo, &opts)?;
            match fuser::spawn_mount(fs, mp, &mount(false)) {
                Ok(s) => {
                    eprintln!(
                        "warning: mounted without auto-unmount ({first}): if cairn is killed, run `fusermount3 -u {}`",
                        mp.display()
                    );
                    s
                }
                Err(e) => {
                    return Err(Error::Other(format!("mounting {}: {e}", mp.display())));
                }
            }
        }
    };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    eprintln!(
        "cairn: repository mounted at {} (read-only); Ctrl-C or `fusermount3 -u {}` unmounts",
        mp.display(),
        mp.display()
    );
    // Until unmounted from outside, or a signal: then unmount. A mount in use is
    // detached and cairn exits: its session would only end when the kernel lets go of
    // the detached mount, which it does not do while cairn holds the device open.
    loop {
        if session.guard.is_finished() {
            break;
        }
        if STOP.load(Ordering::SeqCst) {
            if !unmount(mp)? {
                eprintln!(
                    "cairn: {} was in use: detached; open files there now fail",
                    mp.display()
                );
                return Ok(0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    session
        .join()
        .map_err(|e| Error::Other(format!("the mount ended with an error: {e}")))?;
    ctx.say(format!("unmounted {}", mp.display()));
    Ok(0)
}

/// Unmounts `mp`: at once when nothing uses it, else lazily (it goes when the last
/// user leaves); through fusermount3 when this user may not unmount. True when the
/// mount is gone (false: detached while in use).
fn unmount(mp: &std::path::Path) -> Result<bool> {
    use nix::mount::{umount2, MntFlags};
    match umount2(mp, MntFlags::empty()) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(mp, MntFlags::MNT_DETACH)
                .map_err(|e| Error::Other(format!("unmounting {}: {e}", mp.display())))?;
            Ok(false)
        }
        Err(nix::errno::Errno::EPERM) => {
            let ok = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(mp)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                Ok(false)
            } else {
                Err(Error::Other(format!(
                    "unmounting {}: not permitted, and fusermount3 -u failed",
                    mp.display()
                )))
            }
        }
        Err(e) => Err(Error::Other(format!("unmounting {}: {e}", mp.display()))),
    }
}
