//! The host's kernel log, classified for host faults (pure). The records
//! are parsed by the classifier the agent uses ([`vigil_protocol::kmsg`]);
//! the host adds what only a host has (EDAC memory controllers) and what it
//! needs to map an event to VMs (the OOM victim's PID).
//!
//! Where the shapes come from (mainline kernel sources): the OOM lines from
//! `mm/oom_kill.c` (`__oom_kill_process`: "%s: Killed process %d (%s)
//! total-vm:..."), machine checks from `arch/x86/kernel/cpu/mce/core.c` and
//! `drivers/acpi/apei/ghes.c` ("[Hardware Error]: ..."), EDAC from
//! `drivers/edac/edac_mc.c` (`edac_raw_mc_handle_error`: "EDAC MC%d: %d %s
//! %s error ..." with CE/UE), block errors from `block/blk-core.c`
//! (`blk_print_req_error`: "I/O error, dev %s, sector %llu ..."), hung
//! tasks from `kernel/hung_task.c` ("INFO: task %s:%d blocked for more
//! than %ld seconds.").

use vigil_protocol::kmsg::classify as guest_classify;

use crate::engine::host::HostSignal;
use vigil_protocol::limits::{truncate_utf8, MAX_TEXT};
use vigil_protocol::snapshot::KernelEventKind as K;

/// What a host kernel log record tells about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// The OOM killer killed a process (a QEMU: its VM went with it).
    OomKill {
        /// The victim's PID.
        pid: u32,
        /// Its command name (15 characters at most, as the kernel keeps it).
        comm: String,
    },
    /// A machine check or a firmware-reported hardware error.
    MachineCheck {
        /// The report says the error was not corrected (or was fatal).
        uncorrected: bool,
    },
    /// Memory errors counted by an EDAC memory controller.
    MemoryErrors {
        /// Uncorrected (UE) rather than corrected (CE).
        uncorrected: bool,
        /// How many the record counts.
        count: u64,
    },
    /// A block I/O error on a host device.
    DiskError {
        /// The device (`sda`, `nvme0n1`, `dm-3`).
        dev: String,
    },
    /// A task blocked in the kernel for long (a QEMU thread in D state).
    HungTask {
        /// The task's command name.
        comm: String,
        /// Its PID.
        pid: Option<u32>,
    },
}

impl HostEvent {
    /// What it tells the engine about the host's health; `vms_on` names
    /// the VMs with disks on a device.
    pub fn signal(&self, vms_on: impl Fn(&str) -> Vec<String>) -> HostSignal {
        match self {
            HostEvent::OomKill { .. } => HostSignal::OomKill,
            HostEvent::MachineCheck { uncorrected } => HostSignal::MachineCheck {
                uncorrected: *uncorrected,
            },
            HostEvent::MemoryErrors { uncorrected, count } => HostSignal::MemoryErrors {
                uncorrected: *uncorrected,
                count: *count,
            },
            HostEvent::DiskError { dev } => HostSignal::DiskError {
                dev: dev.clone(),
                vms: vms_on(dev),
            },
            HostEvent::HungTask { .. } => HostSignal::HungTask,
        }
    }

    /// The class's name (metrics, logs).
    pub fn class(&self) -> &'static str {
        match self {
            HostEvent::OomKill { .. } => "oom-kill",
            HostEvent::MachineCheck { .. } => "machine-check",
            HostEvent::MemoryErrors { .. } => "memory-error",
            HostEvent::DiskError { .. } => "disk-error",
            HostEvent::HungTask { .. } => "hung-task",
        }
    }
}

/// One classified record of the host's kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// kmsg sequence number.
    pub seq: u64,
    /// What it tells.
    pub event: HostEvent,
    /// The record's text, cut to [`MAX_TEXT`].
    pub text: String,
}

/// Classify one record's text (pure).
pub fn classify(text: &str) -> Option<HostEvent> {
    if let Some(ev) = edac(text) {
        return Some(ev);
    }
    let (kind, subject) = guest_classify(text)?;
    let ev = match kind {
        K::OomKill => {
            let pid = text
                .split("Killed process ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            HostEvent::OomKill {
                pid,
                comm: subject.unwrap_or_default().to_string(),
            }
        }
        K::MachineCheck => {
            let lower = text.to_ascii_lowercase();
            let uncorrected = ["uncorrected", "fatal", "machine check exception", "panic"]
                .iter()
                .any(|w| lower.contains(w));
            HostEvent::MachineCheck { uncorrected }
        }
        K::IoError => HostEvent::DiskError {
            dev: subject?.to_string(),
        },
        K::HungTask => {
            let task = text.split("task ").nth(1)?.split(" blocked").next()?;
            let (comm, pid) = match task.rsplit_once(':') {
                Some((c, p)) => (c, p.parse().ok()),
                None => (task, None),
            };
            HostEvent::HungTask {
                comm: comm.to_string(),
                pid,
            }
        }
        _ => return None,
    };
    Some(ev)
}

/// EDAC memory controller records: "EDAC MC0: 3 CE memory read error on
/// ...", "EDAC MC1: 1 UE ...", and the older "EDAC MC0: CE page 0x..., ...".
fn edac(text: &str) -> Option<HostEvent> {
    let rest = &text[text.find("EDAC ")?..];
    let body = rest.split_once(": ")?.1;
    let mut words = body.split_whitespace();
    let first = words.next()?;
    let (count, class) = match first.parse::<u64>() {
        Ok(n) => (n, words.next()?),
        Err(_) => (1, first),
    };
    let uncorrected = match class {
        "UE" => true,
        "CE" => false,
        _ => return None,
    };
    Some(HostEvent::MemoryErrors {
        uncorrected,
        count: count.max(1),
    })
}

/// A parsed record as a host record, when it tells something.
pub fn record_of(r: &vigil_protocol::kmsg::Record<'_>) -> Option<HostRecord> {
    Some(HostRecord {
        seq: r.seq,
        event: classify(r.text)?,
        text: truncate_utf8(r.text, MAX_TEXT).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostEvent as E;

    fn oom(pid: u32, comm: &str) -> Option<E> {
        Some(E::OomKill {
            pid,
            comm: comm.into(),
        })
    }

    /// Real-format records (text after the `PRIO,SEQ,TS,-;` prefix).
    #[test]
    fn every_host_sample_is_classified() {
        let samples: &[(&str, Option<E>)] = &[
            (
                "Memory cgroup out of memory: Killed process 25202 (qemu-system-x86) total-vm:2409876kB, anon-rss:262144kB, file-rss:20480kB, shmem-rss:0kB, UID:0 pgtables:1100kB oom_score_adj:0",
                oom(25202, "qemu-system-x86"),
            ),
            (
                "Out of memory: Killed process 4242 (qemu-system-x86) total-vm:8388608kB, anon-rss:4194304kB, file-rss:0kB, shmem-rss:0kB, UID:64055 pgtables:9000kB oom_score_adj:0",
                oom(4242, "qemu-system-x86"),
            ),
            (
                "mce: [Hardware Error]: Machine check events logged",
                Some(E::MachineCheck { uncorrected: false }),
            ),
            (
                "mce: [Hardware Error]: CPU 2: Machine Check Exception: 5 Bank 4: b200000000070f0f",
                Some(E::MachineCheck { uncorrected: true }),
            ),
            (
                "{1}[Hardware Error]: event severity: fatal",
                Some(E::MachineCheck { uncorrected: true }),
            ),
            (
                "{2}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0",
                Some(E::MachineCheck { uncorrected: false }),
            ),
            (
                "EDAC MC0: 3 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x4d2a3 offset:0x340 grain:32 syndrome:0x0)",
                Some(E::MemoryErrors { uncorrected: false, count: 3 }),
            ),
            (
                "EDAC MC1: 1 UE memory read error on CPU_SrcID#1_MC#0_Chan#0_DIMM#1 (channel:0 slot:1 page:0x1234 offset:0x0 grain:32)",
                Some(E::MemoryErrors { uncorrected: true, count: 1 }),
            ),
            (
                "EDAC MC0: CE page 0x7ff0, offset 0x0, grain 8, syndrome 0x55, row 1, channel 0, label \"DIMM_A1\": amd64_edac",
                Some(E::MemoryErrors { uncorrected: false, count: 1 }),
            ),
            (
                "I/O error, dev sdb, sector 1953525000 op 0x1:(WRITE) flags 0x800 phys_seg 8 prio class 0",
                Some(E::DiskError { dev: "sdb".into() }),
            ),
            (
                "blk_update_request: I/O error, dev nvme0n1, sector 2048 op 0x0:(READ)",
                Some(E::DiskError { dev: "nvme0n1".into() }),
            ),
            (
                "INFO: task qemu-system-x86:3131 blocked for more than 120 seconds.",
                Some(E::HungTask { comm: "qemu-system-x86".into(), pid: Some(3131) }),
            ),
            ("EDAC MC0: Giving out device to module sb_edac controller Haswell SrcID#0_Ha#0: DEV 0000:7f:12.0 (INTERRUPT)", None),
            ("virbr0: port 1(vnet0) entered forwarding state", None),
            ("kvm: SMP vm created on host with unstable TSC; guest TSC will not be reliable", None),
        ];
        for (text, want) in samples {
            assert_eq!(classify(text), *want, "{text}");
        }
    }

    #[test]
    fn a_record_keeps_its_sequence_and_bounded_text() {
        let line = format!(
            "3,4711,99000000,-;Out of memory: Killed process 7 (qemu-system-x86) {}",
            "x".repeat(4000)
        );
        let r = vigil_protocol::kmsg::parse_record(&line).unwrap();
        let h = record_of(&r).unwrap();
        assert_eq!((h.seq, h.event), (4711, oom(7, "qemu-system-x86").unwrap()));
        assert_eq!(h.text.len(), MAX_TEXT);
    }
}
