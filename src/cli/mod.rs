//! The command line's handlers, one module per command group. Each turns
//! its clap arguments into typed options and calls `app` or the vault's API.

pub mod admin;
pub mod ca;
pub mod config;
pub mod docs;
pub mod env;
pub mod placeholder;
pub mod run;
pub mod transparent;
pub mod vault;
