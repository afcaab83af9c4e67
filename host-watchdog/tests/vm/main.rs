//! The fault matrix on a real VM: QEMU (TCG) under a real libvirtd, the
//! guest's vsock served by vhost-device-vsock, the real agent inside a
//! busybox initramfs, vigild against `qemu:///system`. Faults are injected
//! through a root shell on the guest's second serial port (or from the
//! host), and the fault kind, layer, action and recovery that vigild
//! journals are asserted; the measured detect / locate / repair times are
//! printed as a table.
//!
//! Gated: `#[ignore = "needs qemu"]`. Run with `bash scripts/vm/test.sh`,
//! which installs and starts what it needs and builds the guest first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

#[path = "../common/mod.rs"]
mod common;

mod case;
mod debian;
mod harness;
mod host;
mod network;
mod prevention;
mod restarts;
mod soak;
mod world;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use case::*;
use harness::*;

#[test]
#[ignore = "needs qemu"]
fn fault_matrix_on_a_real_vm() {
    let mut vm = boot(None);
    let booted = Instant::now();
    vm.wait_healthy(60);
    eprintln!("guest up and healthy after {:?}", booted.elapsed());
    let mut rows = Vec::new();

    // Must not be faults: a suspend longer than the heartbeat timeout.
    let t0 = now_ms();
    assert!(virsh(&["suspend", DOMAIN]).status.success());
    std::thread::sleep(Duration::from_secs(8));
    assert!(virsh(&["resume", DOMAIN]).status.success());
    std::thread::sleep(Duration::from_secs(5));
    let faults = vm.faults_since(t0);
    assert!(faults.is_empty(), "suspend/resume made faults: {faults:?}");
    vm.wait_healthy(20);
    // libvirtd stopped and started again under the guest: blind, said,
    // nothing done; reconnected. The cases after it run on the new
    // connection (its events registered again).
    world::libvirtd_restarted(&mut vm);

    case(
        &mut vm,
        &mut rows,
        "service killed",
        "service-down",
        "guest-service",
        Some("restart-service"),
        |vm| vm.shell("killall testsvc"),
        |_| {},
    );
    // The agent stays dead until vigild has named the fault, then its
    // supervisor brings it back: agent-down, the kernel answers the probe,
    // no reset.
    case(
        &mut vm,
        &mut rows,
        "agent killed",
        "agent-down",
        "agent",
        None,
        |vm| vm.shell("killall agent-loop; killall -9 vigil-agent"),
        |vm| vm.shell("setsid /bin/agent-loop </dev/null >/dev/null 2>&1 &"),
    );
    // Must not be a fault: heavy normal-priority CPU load for 30 s (twice the vCPUs).
    let t0 = now_ms();
    vm.shell("for i in 1 2; do (while :; do :; done) & done; sleep 30; kill %1 %2");
    std::thread::sleep(Duration::from_secs(32));
    let faults = vm.faults_since(t0);
    assert!(faults.is_empty(), "CPU load made faults: {faults:?}");
    // The load is over (the shell answers only once its command ended)
    // and the vCPUs have been idle a while: the SIGSTOP below must find a
    // quiet baseline, not a busy loop's last second (under TCG the guest's
    // `sleep 30` can end after the test's 32 s).
    vm.shell_out("true", 60);
    std::thread::sleep(Duration::from_secs(3));

    // QEMU stopped with SIGSTOP: vCPU time frozen while "running" is a host
    // problem; alert, never a blind reset. SIGCONT heals it.
    let qemu = || {
        let out = Command::new("pgrep")
            .args(["-f", &format!("guest={DOMAIN}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    case(
        &mut vm,
        &mut rows,
        "QEMU SIGSTOP",
        "vcpu-stalled",
        "host",
        None,
        |_| {
            assert!(Command::new("kill")
                .args(["-STOP", &qemu()])
                .status()
                .unwrap()
                .success())
        },
        |_| {
            assert!(Command::new("kill")
                .args(["-CONT", &qemu()])
                .status()
                .unwrap()
                .success())
        },
    );
    // Guest storage: a data disk filling steadily (predicted full first),
    // then read-only.
    prevention::disk_fills_steadily(&mut vm, &mut rows);
    // Out of inodes with most blocks free (a spool of tiny files): as
    // full as full.
    case(
        &mut vm,
        &mut rows,
        "inodes used up",
        "disk-full",
        "guest-storage",
        Some("alert"),
        |vm| vm.shell("i=0; while : > /data/i$i 2>/dev/null; do i=$((i+1)); done; sync"),
        |vm| vm.shell("rm -f /data/i*; sync"),
    );
    case(
        &mut vm,
        &mut rows,
        "remount ro",
        "fs-readonly",
        "guest-storage",
        Some("alert"),
        |vm| remount(vm, "ro"),
        |vm| remount(vm, "rw"),
    );
    // A real ext4 error (the driver's own error path, as a bad block would
    // take it; errors=remount-ro): the journal aborts and every write fails
    // with EROFS while the mount tables still say `rw`. The fault stays open
    // while it is so (it once closed within a second), until the operator
    // mounts the filesystem again (an aborted journal cannot be remounted
    // rw in place).
    let t_err = now_ms();
    case(
        &mut vm,
        &mut rows,
        "ext4 error",
        "fs-readonly",
        "guest-storage",
        Some("alert"),
        |vm| vm.shell("echo 1 > /sys/fs/ext4/vda/trigger_fs_error"),
        |vm| {
            std::thread::sleep(Duration::from_secs(15));
            let closed: Vec<Value> = vm
                .records_since(t_err)
                .into_iter()
                // The ext4 error line may be named io-errors first, then
                // superseded by fs-readonly: one incident, counted once.
                .filter(|r| r["record"] == "closed" && r["how"] != "superseded")
                .collect();
            assert!(
                closed.is_empty(),
                "closed while still read-only: {closed:?}\n{}",
                vm.log()
            );
            vm.shell("umount /data && mount -t ext4 -o errors=remount-ro /dev/vda /data");
        },
    );
    // A task blocked in D state (writing to a frozen filesystem) for ~40 s:
    // the kernel repeats its hung-task line every 10 s. One fault, open
    // while the task is blocked, closed once it is not and the lines stop.
    let t_blk = now_ms();
    case(
        &mut vm,
        &mut rows,
        "blocked task",
        "kernel-degraded",
        "guest-kernel",
        Some("alert"),
        |vm| vm.shell("fsfreeze --freeze /data; (echo x > /data/blocked) &"),
        |vm| {
            std::thread::sleep(Duration::from_secs(25));
            vm.shell("fsfreeze --unfreeze /data; rm -f /data/blocked");
        },
    );
    let degraded = vm
        .records_since(t_blk)
        .into_iter()
        .filter(|r| r["record"] == "fault" && r["kind"] == "kernel-degraded")
        .count();
    assert_eq!(degraded, 1, "one blocked task, one fault");

    // Memory pressure to an OOM kill: more memory through the balloon.
    case(
        &mut vm,
        &mut rows,
        "OOM kill",
        "memory-exhaustion",
        "guest-resources",
        Some("add-memory"),
        |vm| vm.shell("tail /dev/zero"),
        |_| {},
    );
    // The OOM kill and the memory added for it are the advisor's evidence:
    // it recommends more memory, applied to the domain's definition (the
    // guest has it from its next start, below).
    let grown = prevention::advise_and_apply_memory(&vm);
    // A guest hang: a top-priority SCHED_FIFO busy loop with RT throttling
    // off takes the only vCPU; vCPU time advances, nothing else runs, the
    // kernel does not answer the probe -> guest-hang -> reset.
    case(
        &mut vm,
        &mut rows,
        "guest hang",
        "guest-hang",
        "guest-kernel",
        Some("reset"),
        |vm| vm.shell("echo -1 > /proc/sys/kernel/sched_rt_runtime_us; /bin/rt-spin &"),
        |_| {},
    );
    vm.shell = None; // a new boot
                     // Must not be a fault: `virsh destroy` by an operator. The domain is
                     // off on purpose and stays off (no start) until the operator starts it.
    let t_d = now_ms();
    assert!(virsh(&["destroy", DOMAIN]).status.success());
    std::thread::sleep(Duration::from_secs(10));
    let after: Vec<Value> = vm.records_since(t_d);
    assert!(
        after.iter().all(|r| r["record"] == "transition"),
        "an operator's destroy is no fault and no action: {after:?}"
    );
    assert_eq!(vm.state(), "off", "{}", vm.log());
    let info = String::from_utf8(virsh(&["domstate", DOMAIN]).stdout).unwrap();
    assert!(info.contains("shut off"), "left off: {info}");
    assert!(virsh(&["start", DOMAIN]).status.success());
    vm.wait_healthy(60);
    eprintln!("virsh destroy: left off, no fault; started by the operator, healthy");
    prevention::guest_has_memory(&vm, grown);
    // QEMU killed with SIGKILL: its sockets go with it, which once read as
    // the guest refusing the probe (agent-down) until the hypervisor said
    // crashed. One fault: vm-crashed, onset at the close.
    vm.shell = None;
    let t_kill = now_ms();
    case(
        &mut vm,
        &mut rows,
        "QEMU kill -9",
        "vm-crashed",
        "hypervisor",
        Some("start"),
        |_| {
            assert!(Command::new("kill")
                .args(["-KILL", &qemu()])
                .status()
                .unwrap()
                .success())
        },
        |_| {},
    );
    let kinds: Vec<String> = vm
        .records_since(t_kill)
        .into_iter()
        .filter(|r| r["record"] == "fault")
        .map(|r| r["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["vm-crashed"], "only the crash: {}", vm.log());
    // The host runs out of memory for this VM: its QEMU, in a memory
    // cgroup of the test's own that lets it grow by 64 MiB, is killed by
    // the host kernel's OOM killer when the guest touches more. vigild
    // reads that in the host's kernel log: host-oom in the host-resources
    // layer (not a plain crash), and the VM started again.
    vm.shell = None; // a new boot: reconnect to its console shell
    vm.wait_healthy(60);
    let t_oom = now_ms();
    let cgroup = MemCgroup::holding(
        &format!("vigil-host-oom-{}", std::process::id()),
        &qemu(),
        64 << 20,
    );
    case(
        &mut vm,
        &mut rows,
        "host OOM",
        "host-oom",
        "host-resources",
        Some("start"),
        |vm| vm.shell("tail /dev/zero"),
        |_| {},
    );
    drop(cgroup);
    let oom: Vec<Value> = vm
        .records_since(t_oom)
        .into_iter()
        .filter(|r| r["record"] == "fault")
        .collect();
    assert_eq!(oom.len(), 1, "one fault, the host's: {oom:?}");
    let evidence = oom[0]["evidence"].to_string();
    assert!(
        evidence.contains("Killed process"),
        "the kernel's line: {evidence}"
    );
    vm.shell = None; // a new boot: reconnect to its console shell
    case(
        &mut vm,
        &mut rows,
        "kernel panic",
        "guest-panic",
        "guest-kernel",
        Some("reset"),
        |vm| vm.shell("echo c > /proc/sysrq-trigger"),
        |_| {},
    );

    // Operator maintenance: a dead service is not acted on until it ends.
    let sock = vm.sock();
    assert!(common::ctl(&sock, &["maintenance", DOMAIN, "on"])
        .status
        .success());
    let t0 = now_ms();
    vm.shell("killall testsvc");
    std::thread::sleep(Duration::from_secs(7));
    let faults = vm.faults_since(t0);
    assert!(
        faults.is_empty(),
        "maintenance must suppress faults: {faults:?}"
    );
    case(
        &mut vm,
        &mut rows,
        "maintenance off",
        "service-down",
        "guest-service",
        Some("restart-service"),
        |vm| {
            assert!(common::ctl(&vm.sock(), &["maintenance", DOMAIN, "off"])
                .status
                .success());
        },
        |_| {},
    );

    // A reset loop: the guest panics again after every recovery. The per-VM
    // budget (3 destructive actions per hour; the hang and the panic above
    // used two) ends it in quarantine with the evidence kept; an operator's
    // release starts the ladder over and the VM comes back.
    vm.shell = None;
    case(
        &mut vm,
        &mut rows,
        "panic again",
        "guest-panic",
        "guest-kernel",
        Some("reset"),
        |vm| vm.shell("echo c > /proc/sysrq-trigger"),
        |_| {},
    );
    vm.shell = None;
    let t0 = now_ms();
    vm.shell("echo c > /proc/sysrq-trigger");
    let q = vm.wait(30, "quarantine", "transition", |r| r["to"] == "quarantined");
    assert!(
        q["why"].as_str().unwrap().contains("budget exhausted"),
        "{q}"
    );
    let after: Vec<Value> = vm.records_since(t0);
    assert!(
        after
            .iter()
            .any(|r| r["record"] == "intent" && r["action"]["kind"] == "capture-evidence"),
        "evidence kept"
    );
    assert!(
        !after
            .iter()
            .any(|r| r["record"] == "intent" && r["action"]["kind"] == "reset"),
        "no reset past the budget"
    );
    assert_eq!(vm.state(), "quarantined");
    // The operator sees why, and how to release it.
    let status = common::ctl(&sock, &["status", DOMAIN]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("quarantined:   ")
            && status.contains("budget exhausted")
            && status.contains(&format!("vigilctl release {DOMAIN}")),
        "{status}"
    );
    let last_reset = common::find(&sock, "intent", DOMAIN, |r| r["action"]["kind"] == "reset")
        .iter()
        .filter_map(|r| r["action"]["id"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(common::ctl(&sock, &["release", DOMAIN]).status.success());
    vm.wait(30, "reset after release", "intent", |r| {
        r["action"]["kind"] == "reset" && r["action"]["id"].as_u64().unwrap_or(0) > last_reset
    });
    vm.wait_healthy(60);
    eprintln!("reset loop: quarantined after the budget, released, healthy again");
    restarts::restarts_while_paused(&mut vm);
    // vigild stops on SIGTERM (with a remote libvirt connection it once
    // hung there, deregistering its event callbacks).
    let pid = vm.vigild.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    common::wait_until(Duration::from_secs(10), "vigild to exit on SIGTERM", || {
        matches!(vm.vigild.try_wait(), Ok(Some(_)))
    });
    drop(vm);

    // Host faults (libvirtd stopped during a hang, the host filesystem
    // under a VM's disk full), on a VM of their own.
    host::host_faults(&mut rows);

    // Network faults (the host's link, the guest's interface and route, a
    // TCP check's target) and what is not one (a 1 s flap, heavy traffic),
    // on a VM of their own with a user-mode NIC.
    network::network_faults(&mut rows);

    // Snapshot restore, on a fresh VM and journal (a fresh destructive
    // budget) whose shut-off disk was snapshotted as known-good. The data
    // disk is corrupted and the guest crashes; from then on every boot
    // panics (the init cannot mount the disk): reset, reset, then the
    // ladder reverts to the known-good snapshot, keeping the broken disk as
    // a safety snapshot.
    let mut vm = boot(Some("known-good"));
    vm.wait_healthy(60);
    let t0 = now_ms();
    case(
        &mut vm,
        &mut rows,
        "disk corrupted",
        "guest-panic",
        "guest-kernel",
        Some("reset"),
        |vm| {
            vm.shell(
                "umount /data; dd if=/dev/zero of=/dev/vda bs=4k count=64 2>/dev/null; sync; \
                 echo c > /proc/sysrq-trigger",
            )
        },
        |_| {},
    );
    let reverts: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| {
            r["record"] == "outcome"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("reverted to known-good"))
        })
        .collect();
    assert_eq!(reverts.len(), 1, "one revert: {}", vm.log());
    let list = String::from_utf8(virsh(&["snapshot-list", DOMAIN, "--name"]).stdout).unwrap();
    let names: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let safety = names
        .iter()
        .find(|n| n.starts_with("vigil-safety-"))
        .unwrap_or_else(|| panic!("a safety snapshot: {names:?}"));
    assert!(names.contains(&"known-good"), "{names:?}");
    // The safety snapshot holds the broken disk, known-good the good one.
    assert!(
        !has_ext2(&vm, safety),
        "the safety snapshot keeps the corruption"
    );
    assert!(has_ext2(&vm, "known-good"));
    eprintln!("snapshot restore: back on known-good, broken disk kept as {safety}");
    drop(vm);

    memory_ladder_to_the_maximum();

    print_table(&rows);
}

/// Memory pressure more memory does not cure, on a fresh VM (budget):
/// OOM kills go on (a loop of `tail /dev/zero`), so the balloon grows
/// the guest to its maximum (384 -> 480 -> 512 MiB), then the ladder
/// reboots it through the agent, and the loop is gone.
fn memory_ladder_to_the_maximum() {
    let mut vm = boot(None);
    vm.wait_healthy(60);
    // The guest starts with all 512 MiB and its balloon driver gives back
    // 128 within seconds: let it settle first. vigild takes each step from
    // the balloon's size at its last poll (a quiet domain's, up to 5 s
    // old), which may still be the boot's larger figure: the first step
    // then goes straight to the maximum.
    let settled = |info: &str| {
        info.lines()
            .any(|l| l.starts_with("Used memory:") && l.contains("393216 KiB"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !settled(&String::from_utf8(virsh(&["dominfo", DOMAIN]).stdout).unwrap())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    let t0 = now_ms();
    let began = Instant::now();
    vm.shell("(while :; do tail /dev/zero; done) &");
    vm.wait(240, "agent-reboot for memory", "intent", |r| {
        r["action"]["kind"] == "agent-reboot" && r["action"]["id"].is_number()
    });
    vm.shell = None;
    let after: Vec<Value> = vm.records_since(t0);
    let sizes: Vec<u64> = after
        .iter()
        .filter(|r| r["record"] == "intent" && r["action"]["kind"] == "add-memory")
        .filter_map(|r| r["action"]["memory_kib"].as_u64())
        .collect();
    // 384 -> 480 -> 512 MiB, or straight to 512 (above): steps up from
    // what the guest had, ending at the maximum.
    assert!(
        !sizes.is_empty()
            && sizes.windows(2).all(|w| w[0] < w[1])
            && sizes[0] > 393_216
            && sizes.last() == Some(&524_288),
        "balloon steps {sizes:?}: {after:?}"
    );
    let faults: Vec<&Value> = after.iter().filter(|r| r["record"] == "fault").collect();
    assert!(
        faults.iter().all(|f| f["kind"] == "memory-exhaustion"),
        "{faults:?}"
    );
    // Closed once the new boot has gone the reboot rung's verification
    // window (30 s for this guest, see `Guest::busybox`) without an OOM
    // kill.
    vm.wait_healthy(90);
    let info = String::from_utf8(virsh(&["dominfo", DOMAIN]).stdout).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Used memory:") && l.contains("524288 KiB")),
        "at the maximum: {info}"
    );
    eprintln!(
        "memory ladder: add-memory to {:?} KiB, agent-reboot, healthy {:?} after the OOM loop began",
        sizes,
        began.elapsed()
    );
}

/// Remount /data `ro` or `rw`, and fail the test if the guest's mount did
/// (a busy filesystem refuses `ro`: then the case would wait for a fault
/// never injected).
fn remount(vm: &mut Vm, how: &str) {
    let out = vm.shell_out(
        &format!("mount -o remount,{how} /data || echo REMOUNT\"\"FAILED"),
        30,
    );
    assert!(!out.contains("REMOUNTFAILED"), "remount,{how}: {out}");
}
