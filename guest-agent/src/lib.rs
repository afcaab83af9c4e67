//! `vigil-agent`: the in-guest health agent.
//!
//! Modules, in the order data flows through them:
//! - [`config`]: the TOML config, validation, defaults;
//! - [`collect`]: collectors over `/proc` and `/sys` (processes, watch list,
//!   filesystems, memory, PSI, CPU), each rooted at a path for tests;
//! - [`kmsg`]: `/dev/kmsg` record parsing and classification;
//! - [`pstore`]: the previous boot's crash record;
//! - [`health`]: rules for the `check` one-shot probe;
//! - [`commands`]: the allow-list and running host commands;
//! - [`client`]: connect, handshake, heartbeat, report, reconnect;
//! - [`maintenance`]: guest-declared maintenance windows and the local
//!   socket `vigil-agent maintenance` talks to.

pub mod check;
pub mod cli;
pub mod client;
pub mod collect;
pub mod commands;
pub mod config;
pub mod health;
pub mod kmsg;
pub mod maintenance;
pub mod pstore;
