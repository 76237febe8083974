#![forbid(unsafe_code)]
//! The token vault. Built out in the vault issue.
