//! `vigild` and `vigilctl`: Vigil's host watchdog.
//!
//! - [`engine`]: the pure fault engine (detect, locate, decide);
//! - [`backend`]: the hypervisor trait and its libvirt implementation, domain events;
//! - [`daemon`]: vigild: sessions, core, executor, control API, Prometheus metrics;
//! - [`journal`]: the SQLite journal;
//! - [`config`]: vigild's configuration;
//! - [`metrics`]: fault rate, MTTD/MTTL/MTTR and availability from journal records;

pub mod advisor;
pub mod backend;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod html;
pub mod journal;
pub mod metrics;
