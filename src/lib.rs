#![forbid(unsafe_code)]
//! The `airlock` command: `config` parses the file, `app` assembles and runs
//! proxy, vault and metrics from it, `cli` holds the subcommands' handlers.
//! Data flows one way: `cli` → `app` → `config`.

pub mod app;
pub mod cli;
pub mod config;
mod error;
pub mod sandbox_env;

pub use error::{Error, Listener};

/// The target of the command's own log lines, wherever in the crate they
/// are written (operators filter on it: `AIRLOCK_LOG=airlock=debug`).
pub const LOG_TARGET: &str = "airlock";
