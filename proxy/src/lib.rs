#![forbid(unsafe_code)]
//! airlock's intercepting forward proxy.
//!
//! A sandbox points `HTTPS_PROXY` here. For hosts with a binding the proxy
//! terminates TLS with a leaf from [`airlock_certs`], swaps placeholders for
//! real tokens from a [`airlock_vault_client::TokenSource`], and forwards over
//! verified TLS; other hosts are tunnelled byte for byte.

pub mod audit;
pub mod body;
pub mod body_swap;
pub mod compression;
pub mod egress;
pub mod error;
mod forward;
pub mod limits;
pub mod metrics;
pub mod parse;
mod rewind;
pub mod scrub;
pub mod server;
pub mod settings;
pub mod swap;
pub mod upstream;
mod websocket;

pub use error::{ProxyError, Side};
pub use server::Proxy;
pub use settings::{InterceptMode, ProxySettings};
