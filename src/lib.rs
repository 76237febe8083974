#![forbid(unsafe_code)]
//! The parts of the `airlock` command that other code (tests, fuzzers) uses:
//! the configuration file and the sandbox environment.

pub mod config;
pub mod sandbox_env;
