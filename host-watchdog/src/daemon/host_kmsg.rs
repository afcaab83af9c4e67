//! The host's kernel log on a thread of its own: records from now on
//! (never the log's past: a restarted vigild must not take an old OOM kill
//! for news), classified ([`crate::host::kmsg`]), the VM of a QEMU they
//! name found ([`crate::host::qemu`]), and told to the core. A storm (a
//! DIMM spewing corrected errors) is cut to a bounded rate per class. And
//! the host's memory and I/O pressure, read on a thread of its own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;
use vigil_protocol::kmsg::{KmsgReader, ReadOutcome};
use vigil_protocol::limits::LogLimit;

use super::CoreMsg;
use crate::host::kmsg::{record_of, HostEvent, HostRecord};
use crate::host::qemu::QemuPids;

/// How often the live QEMUs are looked for.
const PIDS_EVERY: Duration = Duration::from_secs(2);

/// Records of one class told to the core per minute, at most.
const PER_CLASS_PER_MINUTE: u32 = 60;

/// A host kernel record for the core, with the VM its process ran.
#[derive(Debug, Clone)]
pub struct HostKernel {
    /// The record.
    pub record: HostRecord,
    /// The VM whose QEMU it names, when it names one.
    pub vm: Option<String>,
    /// Records of this class left out before it (rate limit).
    pub left_out: u64,
}

fn class_index(e: &HostEvent) -> usize {
    match e {
        HostEvent::OomKill { .. } => 0,
        HostEvent::MachineCheck { .. } => 1,
        HostEvent::MemoryErrors { .. } => 2,
        HostEvent::DiskError { .. } => 3,
        HostEvent::HungTask { .. } => 4,
    }
}

/// Read `path` (`/dev/kmsg`, or a file or FIFO of records) until the core
/// goes away; `proc_root` is where processes are looked up.
pub fn run(path: PathBuf, proc_root: PathBuf, core: Sender<CoreMsg>) {
    let mut reader = match KmsgReader::open(&path, true) {
        Ok(r) => r,
        Err(e) => {
            log::warn!(
                "host kernel log {}: {e}; host faults from it are not seen",
                path.display()
            );
            return;
        }
    };
    // From now on (a FIFO cannot seek, and has no past).
    let _ = reader.skip_to_end();
    log::info!("reading the host's kernel log from {}", path.display());
    let started = Instant::now();
    let mut pids = QemuPids::default();
    pids.refresh(&proc_root);
    let mut looked = Instant::now();
    let mut limits: Vec<LogLimit> = (0..5)
        .map(|_| LogLimit::new(PER_CLASS_PER_MINUTE))
        .collect();
    let mut overwritten = LogLimit::new(1);
    loop {
        if looked.elapsed() >= PIDS_EVERY {
            pids.refresh(&proc_root);
            looked = Instant::now();
        }
        let records = match reader.read_with(record_of) {
            Ok(ReadOutcome::Records(r)) => r,
            Ok(ReadOutcome::Idle) => {
                wait_readable(&reader);
                continue;
            }
            Ok(ReadOutcome::Overwritten) => {
                let now = started.elapsed().as_millis() as u64;
                if let Some(n) = overwritten.allow(now) {
                    log::warn!("host kernel log: records overwritten before they were read (and {n} more times)");
                }
                continue;
            }
            Err(e) => {
                log::warn!("host kernel log {}: {e}; no longer read", path.display());
                return;
            }
        };
        for record in records {
            // A QEMU killed or stuck is found among the live ones; one the
            // killer chose may be gone already, so look again once.
            let pid = match &record.event {
                HostEvent::OomKill { pid, .. } => Some(*pid),
                HostEvent::HungTask { pid, .. } => *pid,
                _ => None,
            };
            let mut vm = pid.and_then(|p| pids.vm(p).map(str::to_string));
            if vm.is_none() && pid.is_some() {
                pids.refresh(&proc_root);
                vm = pid.and_then(|p| pids.vm(p).map(str::to_string));
            }
            let now = started.elapsed().as_millis() as u64;
            let Some(left_out) = limits[class_index(&record.event)].allow(now) else {
                continue;
            };
            let msg = CoreMsg::HostKernel(HostKernel {
                record,
                vm,
                left_out,
            });
            if core.blocking_send(msg).is_err() {
                return;
            }
        }
    }
}

/// Wait until the log may have more: the device wakes a poll; a plain file
/// or a FIFO without a writer is always "ready" at its end, so it is
/// looked at again after a short sleep.
fn wait_readable(reader: &KmsgReader) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let t = Instant::now();
    let mut fds = [PollFd::new(reader.fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(1000u16)).is_err()
        || t.elapsed() < Duration::from_millis(10)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How often the host's pressure is read.
const PRESSURE_EVERY: Duration = Duration::from_secs(10);

/// Read the host's memory and I/O pressure every few seconds until the
/// core goes away (a kernel without PSI: nothing to read, the thread ends).
pub fn pressure(proc_root: &std::path::Path, core: &Sender<CoreMsg>) {
    use crate::host::pressure::read;
    loop {
        let (memory, io) = (read(proc_root, "memory"), read(proc_root, "io"));
        if memory.is_none() && io.is_none() {
            log::info!("no pressure stall information here: host pressure not watched");
            return;
        }
        let msg = CoreMsg::HostPressure {
            memory: memory.map(|p| p.full_avg60),
            io: io.map(|p| p.full_avg60),
        };
        if core.blocking_send(msg).is_err() {
            return;
        }
        std::thread::sleep(PRESSURE_EVERY);
    }
}
