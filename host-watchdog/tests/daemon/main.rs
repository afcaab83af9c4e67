//! vigild end to end without VMs: real `vigild`, real `vigil-agent`
//! processes over Unix sockets, libvirt's test driver with three domains
//! (tests/fixtures/node.xml), `vigilctl` as the operator. Every process is
//! killed when its test ends, pass or fail.
//!
//! Needs `target/debug/vigil-agent` (scripts/test.sh builds the workspace
//! before testing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

#[path = "../common/mod.rs"]
mod common;

mod advise;
mod cluster;
mod control;
mod handover;
mod host;
mod hostile;
mod network;
mod recovery;
mod rig;
mod warnings;
mod world;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_protocol::io::{write_message, MessageReader};
use vigil_protocol::snapshot::{Filesystem, Snapshot};
use vigil_protocol::*;

use common::wait_until;
use rig::*;
