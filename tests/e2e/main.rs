//! End-to-end tests: the real `airlock` binary between real clients and real
//! TLS upstreams on loopback.

#[path = "../support/mod.rs"]
mod support;

mod bodies;
mod cli;
mod console;
mod containment;
mod examples;
mod foundation;
#[cfg(feature = "otel")]
mod otel;
mod vault;
mod vault_postgres;
