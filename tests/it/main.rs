//! Integration tests: the real `cairn` binary against repositories in temp dirs.
//! One test binary (modules below) to keep link time down.

mod common;
mod servers;

mod backends;
mod bad_input;
mod busy;
mod cache;
mod changing;
mod cli;
mod concurrency;
mod copy;
mod crash;
mod damaged_snapshot;
mod dedup;
mod diff;
mod dump;
mod faults;
mod fidelity;
mod find;
mod fuzz_corpus;
mod history;
mod hostile;
mod interleave;
mod kdf;
mod locking;
mod maintenance;
mod mount;
mod ops;
mod permissions;
mod probe;
mod remote;
mod remote_errors;
mod requests;
mod restore_overwrite;
mod restore_plan;
mod restore_race;
mod restore_review;
mod restore_safety;
mod selection;
mod sources;
mod stalls;
mod stats;
mod stress;
mod swaps;
mod tag;
