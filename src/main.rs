//! The `cairn` command. All of it lives in `cli/`; the work is in the library.

mod cli;

fn main() {
    // Large buffers (file contents, packs) come and go by the thousand: keep them out of
    // glibc's heap arenas, where freed memory is retained and peak RSS creeps up.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    // The source walk holds one descriptor per directory level it is inside (that is
    // what keeps a swapped-in symlink from steering it): allow as many as the hard
    // limit does, not the 1024 a cron job's soft limit often is.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
    std::process::exit(cli::run());
}
