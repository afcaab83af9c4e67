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

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DOMAIN: &str = "vigil-e2e";

fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .unwrap()
}

/// The VM, vhost-device-vsock and vigild; torn down on drop.
struct Vm {
    dir: tempfile::TempDir,
    vsock: Child,
    vigild: Child,
    shell: Option<UnixStream>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        // vigild first: it would start the destroyed domain again.
        let _ = self.vigild.kill();
        let _ = self.vigild.wait();
        let _ = virsh(&["destroy", DOMAIN]);
        let _ = virsh(&["undefine", DOMAIN, "--snapshots-metadata"]);
        let _ = self.vsock.kill();
        let _ = self.vsock.wait();
    }
}

impl Vm {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- vigild\n{}\n--- console\n{}",
            read("vigild.log"),
            read("console.log")
        )
    }

    /// Type a command into the guest's root shell (ttyS1). After a reboot
    /// QEMU's socket is a new one: reconnect once when the old one is gone.
    fn shell(&mut self, cmd: &str) {
        let line = format!("{cmd}\n");
        for _ in 0..2 {
            if self.shell.is_none() {
                self.shell = Some(UnixStream::connect(self.dir.path().join("shell.sock")).unwrap());
            }
            if self
                .shell
                .as_mut()
                .unwrap()
                .write_all(line.as_bytes())
                .is_ok()
            {
                return;
            }
            self.shell = None;
        }
        panic!("cannot write to the guest shell");
    }

    fn state(&self) -> String {
        common::ctl_json(&self.sock(), &["status", DOMAIN])["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn wait_healthy(&self, secs: u64) {
        common::wait_until(Duration::from_secs(secs), "VM healthy", || {
            common::ctl(&self.sock(), &["status", DOMAIN, "--json"])
                .status
                .success()
                && self.state() == "healthy"
        });
    }

    fn wait(&self, secs: u64, what: &str, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        common::wait_record(&self.sock(), secs, what, kind, DOMAIN, pred, || self.log())
    }

    fn records_since(&self, t: u64) -> Vec<Value> {
        common::records(&self.sock())
            .into_iter()
            .filter(|(rt, _)| *rt >= t)
            .map(|(_, r)| r)
            .collect()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Boot the test domain on a fresh copy of the data disk, with a fresh
/// vigild. With `known_good`, the shut-off domain's disk is snapshotted
/// under that name before the first start and vigild is told to revert to
/// it.
fn boot(known_good: Option<&str>) -> Vm {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let kernel = root.join("target/vm/vmlinuz");
    let initrd = root.join("target/vm/initrd.img");
    let disk = root.join("target/vm/disk.qcow2");
    assert!(
        kernel.exists() && initrd.exists() && disk.exists(),
        "build the guest first: bash scripts/vm/build-guest.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().to_path_buf();
    let w = w.as_path();
    let _ = virsh(&["destroy", DOMAIN]);
    let _ = virsh(&["undefine", DOMAIN, "--snapshots-metadata"]);
    std::fs::copy(&disk, w.join("disk.qcow2")).unwrap();
    // vhost-device-vsock must be running before the domain starts.
    let vsock = Command::new("vhost-device-vsock")
        .arg("--vm")
        .arg(format!(
            "guest-cid=3,socket={},uds-path={}",
            w.join("vhost.sock").display(),
            w.join("vm.vsock").display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.join("vhost-device-vsock.log")).unwrap())
        .spawn()
        .expect("vhost-device-vsock on PATH (scripts/vm/setup-host.sh installs it)");
    common::wait_until(Duration::from_secs(10), "vhost-user socket", || {
        w.join("vhost.sock").exists()
    });
    let mut config = format!(
        "libvirt_uri = \"qemu:///system\"\njournal = \"{d}/journal.db\"\ncontrol_socket = \"{d}/control.sock\"\n\
         metrics_listen = \"\"\n[[vm]]\ndomain = \"{DOMAIN}\"\nagent = \"hybrid://{d}/vm.vsock:1217\"\nprobe = \"hybrid://{d}/vm.vsock:9\"\n",
        d = w.display()
    );
    if let Some(s) = known_good {
        config.push_str(&format!("snapshot = \"{s}\"\n"));
    }
    std::fs::write(w.join("vigild.toml"), config).unwrap();
    let vigild = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .arg("--config")
        .arg(w.join("vigild.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.join("vigild.log")).unwrap())
        .spawn()
        .unwrap();
    let mut vm = Vm {
        dir,
        vsock,
        vigild,
        shell: None,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(vm.sock()).is_err() {
        if let Some(st) = vm.vigild.try_wait().unwrap() {
            panic!("vigild exited ({st}):\n{}", vm.log());
        }
        assert!(
            Instant::now() < deadline,
            "vigild did not come up:\n{}",
            vm.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let xml = std::fs::read_to_string(root.join("tests/fixtures/vm.xml.in"))
        .unwrap()
        .replace("@NAME@", DOMAIN)
        .replace("@UUID@", "5e1f0000-0000-4000-8000-000000000001")
        .replace("@WORK@", &w.display().to_string())
        .replace(
            "@KERNEL@",
            &kernel.canonicalize().unwrap().display().to_string(),
        )
        .replace(
            "@INITRD@",
            &initrd.canonicalize().unwrap().display().to_string(),
        );
    std::fs::write(w.join("vm.xml"), xml).unwrap();
    let out = virsh(&["define", &w.join("vm.xml").display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(s) = known_good {
        let out = virsh(&["snapshot-create-as", DOMAIN, s]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = virsh(&["start", DOMAIN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vm
}

/// One row of the measured-times table.
struct Row {
    case: &'static str,
    kind: String,
    layer: String,
    action: String,
    detect: u64,
    locate: u64,
    repair: Option<u64>,
    /// From the injection to the located fault, measured by the test.
    injected: u64,
}

/// An action kind as journaled: a name, or an object keyed by the name.
fn action_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Inject, then check the fault vigild located and its recovery.
#[allow(clippy::too_many_arguments)]
fn case(
    vm: &mut Vm,
    rows: &mut Vec<Row>,
    name: &'static str,
    kind: &str,
    layer: &str,
    action: Option<&str>,
    inject: impl FnOnce(&mut Vm),
    heal: impl FnOnce(&mut Vm),
) {
    let t0 = now_ms();
    inject(vm);
    let fault = vm.wait(30, &format!("{name}: fault {kind}"), "fault", |r| {
        r["kind"] == kind && r["located"].as_u64().unwrap_or(0) >= t0
    });
    assert_eq!(fault["layer"], layer, "{name}: {fault}");
    heal(vm);
    let id = fault["id"].as_u64().unwrap();
    let closed = vm.wait(120, &format!("{name}: {kind} closed"), "closed", |r| {
        r["id"].as_u64() == Some(id)
    });
    let intents: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| {
            r["record"] == "intent"
                && r["action"]["fault"].as_u64() == Some(id)
                && r["rung"].is_number()
        })
        .collect();
    let first = intents.first().map(|r| r["action"]["kind"].clone());
    match action {
        Some(a) => {
            let k = first.clone().unwrap_or(Value::Null);
            let matches = k == a || k.as_object().is_some_and(|o| o.contains_key(a));
            assert!(matches, "{name}: expected {a}, got {k}; {}", vm.log());
        }
        None => assert!(
            intents.iter().all(|r| ![
                "reset",
                "destroy-start",
                "snapshot-revert",
                "reboot",
                "start"
            ]
            .iter()
            .any(|d| r["action"]["kind"] == *d)),
            "{name}: no destructive action expected: {intents:?}"
        ),
    }
    rows.push(Row {
        case: name,
        kind: kind.into(),
        layer: layer.into(),
        action: if intents.is_empty() {
            "-".into()
        } else {
            intents
                .iter()
                .map(|r| action_name(&r["action"]["kind"]))
                .collect::<Vec<_>>()
                .join(">")
        },
        detect: closed["detect_ms"].as_u64().unwrap(),
        locate: closed["locate_ms"].as_u64().unwrap(),
        repair: (closed["how"] == "recovered").then(|| closed["repair_ms"].as_u64().unwrap()),
        injected: fault["located"].as_u64().unwrap().saturating_sub(t0),
    });
    vm.wait_healthy(60);
}

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
    let faults: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| r["record"] == "fault")
        .collect();
    assert!(faults.is_empty(), "suspend/resume made faults: {faults:?}");
    vm.wait_healthy(20);

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
    // Must not be a fault: heavy normal-priority CPU load for 60 s.
    let t0 = now_ms();
    vm.shell("for i in 1 2; do (while :; do :; done) & done; sleep 60; kill %1 %2");
    std::thread::sleep(Duration::from_secs(62));
    let faults: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| r["record"] == "fault")
        .collect();
    assert!(faults.is_empty(), "CPU load made faults: {faults:?}");

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
    // Guest storage: the data disk fills up, then goes read-only.
    case(
        &mut vm,
        &mut rows,
        "disk filled",
        "disk-full",
        "guest-storage",
        Some("alert"),
        |vm| vm.shell("dd if=/dev/zero of=/data/fill bs=1M 2>/dev/null; sync"),
        |vm| vm.shell("rm -f /data/fill; sync"),
    );
    case(
        &mut vm,
        &mut rows,
        "remount ro",
        "fs-readonly",
        "guest-storage",
        Some("alert"),
        |vm| vm.shell("mount -o remount,ro /data"),
        |vm| vm.shell("mount -o remount,rw /data"),
    );
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
                     // INJECT->LOC includes `virsh destroy` itself (libvirt's SIGTERM, QEMU's
                     // exit under TCG); how long that took is printed beside it.
    let mut destroy_ms = 0;
    case(
        &mut vm,
        &mut rows,
        "virsh destroy",
        "vm-crashed",
        "hypervisor",
        Some("start"),
        |_| {
            let t = Instant::now();
            assert!(virsh(&["destroy", DOMAIN]).status.success());
            destroy_ms = t.elapsed().as_millis();
        },
        |_| {},
    );
    eprintln!("virsh destroy: the command itself took {destroy_ms} ms");
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
    let faults: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| r["record"] == "fault")
        .collect();
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
    // vigild stops on SIGTERM (with a remote libvirt connection it once
    // hung there, deregistering its event callbacks).
    let pid = vm.vigild.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    common::wait_until(Duration::from_secs(10), "vigild to exit on SIGTERM", || {
        matches!(vm.vigild.try_wait(), Ok(Some(_)))
    });
    drop(vm);

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

    // DETECT/LOCATE/REPAIR are vigild's own figures (from the last sign of
    // health); INJECT->LOC is the test's clock from the injection to the
    // located fault.
    eprintln!(
        "\n{:<16} {:<18} {:<15} {:<28} {:>9} {:>9} {:>9} {:>11}",
        "CASE", "FAULT", "LAYER", "ACTIONS", "DETECT", "LOCATE", "REPAIR", "INJECT->LOC"
    );
    for r in &rows {
        let repair = r.repair.map_or("-".into(), |x| format!("{x} ms"));
        eprintln!(
            "{:<16} {:<18} {:<15} {:<28} {:>6} ms {:>6} ms {:>9} {:>8} ms",
            r.case, r.kind, r.layer, r.action, r.detect, r.locate, repair, r.injected
        );
    }
}

/// Whether the disk as kept in snapshot `name` has an ext2 superblock
/// (magic 0xEF53 at byte 1080). Read with a shared lock: the VM is running.
fn has_ext2(vm: &Vm, name: &str) -> bool {
    let out = vm.dir.path().join(format!("{name}.raw"));
    let st = Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "raw", "-l"])
        .arg(format!("snapshot.name={name}"))
        .arg(vm.dir.path().join("disk.qcow2"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img convert of snapshot {name}");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    bytes.get(1080..1082) == Some(&[0x53, 0xEF][..])
}
