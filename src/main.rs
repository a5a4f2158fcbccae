//! The `cairn` command. All of it lives in `cli/`; the work is in the library.

mod cli;

fn main() {
    // Large buffers (file contents, packs) come and go by the thousand: keep them out of
    // glibc's heap arenas, where freed memory is retained and peak RSS creeps up.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    std::process::exit(cli::run());
}
