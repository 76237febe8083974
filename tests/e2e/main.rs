//! End-to-end tests: the real `airlock` binary between real clients and real
//! TLS upstreams on loopback.

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod bodies;
mod cli;
mod config_collisions;
mod connect_flows;
mod consent;
mod console;
mod containment;
mod early;
mod egress;
mod evidence;
mod examples;
mod failures;
mod firewall;
mod fleet;
mod foundation;
mod hmac_signing;
mod netns;
mod oauth1;
mod oidc;
mod oidc_accounts;
#[cfg(feature = "otel")]
mod otel;
mod replay;
mod rules;
mod sigv4;
mod status;
mod step_up;
mod transparent;
mod vault;
mod vault_admin;
mod vault_errors;
mod vault_postgres;
mod vault_refresh;
mod white_label;
