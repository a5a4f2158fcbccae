//! Signal flags for the commands that run others (`run`, `daemon`): the handler only
//! sets a flag; the loop that waits on children reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static STOP: OnceLock<&'static AtomicBool> = OnceLock::new();
static RELOAD: OnceLock<&'static AtomicBool> = OnceLock::new();

extern "C" fn on_stop_signal(_: libc::c_int) {
    if let Some(f) = STOP.get() {
        f.store(true, Ordering::Relaxed);
    }
}

extern "C" fn on_reload_signal(_: libc::c_int) {
    if let Some(f) = RELOAD.get() {
        f.store(true, Ordering::Relaxed);
    }
}

fn install(sig: Signal, h: extern "C" fn(libc::c_int)) {
    let a = SigAction::new(SigHandler::Handler(h), SaFlags::SA_RESTART, SigSet::empty());
    // Safe: the handler only stores to an atomic.
    let _ = unsafe { sigaction(sig, &a) };
}

/// SIGTERM and SIGINT set `flag`.
pub fn on_stop(flag: &'static AtomicBool) {
    let _ = STOP.set(flag);
    install(Signal::SIGTERM, on_stop_signal);
    install(Signal::SIGINT, on_stop_signal);
}

/// SIGHUP sets `flag`.
pub fn on_reload(flag: &'static AtomicBool) {
    let _ = RELOAD.set(flag);
    install(Signal::SIGHUP, on_reload_signal);
}

/// SIGHUP ignored, here and in every child (an ignored signal stays ignored across exec).
pub fn ignore_hangup() {
    let a = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let _ = unsafe { sigaction(Signal::SIGHUP, &a) };
}
