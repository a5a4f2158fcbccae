//! Operations around the repository, for profiles and the daemon (DESIGN.md layer 5):
//! the config file, runs of a profile, schedules, the run history, hooks,
//! notifications and health. They drive the commands of layer 4, never the reverse.

pub mod health;
pub mod history;
pub mod hooks;
pub mod notify;
pub mod profile;
pub mod runner;
pub mod schedule;
