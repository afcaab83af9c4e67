//! `vigild` and `vigilctl`: Vigil's host watchdog.
//!
//! - [`engine`]: the pure fault engine (detect, locate, decide);
//! - [`metrics`]: fault rate, MTTD/MTTL/MTTR and availability from journal records;
//! - [`sim`]: the scenario simulator that drives the engine on a virtual clock.

pub mod backend;
pub mod engine;
pub mod metrics;
pub mod sim;
