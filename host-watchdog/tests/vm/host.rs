//! Host faults on a real VM, on a domain of their own: libvirtd stopped
//! while the guest hangs, and the host filesystem under one of the VM's
//! disks filling up (a small tmpfs of the test's own).

use super::*;

/// A tmpfs of the test's own, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size_mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("vigil-test-hostfs")
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// Host faults: a VM whose second disk (`vdb`, qcow2, `error_policy='stop'`)
/// lives on a 48 MiB tmpfs with a 16 MiB ballast file beside it.
pub fn host_faults(rows: &mut Vec<Row>) {
    let fs = Tmpfs::new(48);
    let spill = fs.path().join("spill.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&spill)
        .arg("256M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 16 << 20]).unwrap();
    let mut g = Guest::busybox();
    g.extra = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2' error_policy='stop'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        spill.display()
    );
    let mut vm = boot_guest(&g, None);
    vm.wait_healthy(60);

    // libvirtd stopped (SIGSTOP: the one scripts/vm/libvirt.sh started)
    // for 20 s while the guest hangs, on a fresh VM and journal: vigild is
    // blind to the hypervisor. One host-level fault names it
    // (hypervisor-unresponsive); no action is taken while blind; once
    // libvirtd answers again the hang is repaired.
    let libvirtd = std::fs::read_to_string("/run/vigil-libvirtd.pid")
        .expect("libvirtd started by scripts/vm/libvirt.sh (its PID file)")
        .trim()
        .to_string();
    let comm = std::fs::read_to_string(format!("/proc/{libvirtd}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "libvirtd",
        "PID {libvirtd} is not our libvirtd"
    );
    let t0 = now_ms();
    let stopped = Stopped::new(&libvirtd);
    vm.shell("echo -1 > /proc/sys/kernel/sched_rt_runtime_us; /bin/rt-spin &");
    std::thread::sleep(Duration::from_secs(20));
    let blind = vm.records_since(t0);
    let t_cont = now_ms();
    drop(stopped);
    let host_faults: Vec<&Value> = blind
        .iter()
        .filter(|r| r["record"] == "fault" && r["kind"] == "hypervisor-unresponsive")
        .collect();
    assert_eq!(
        host_faults.len(),
        1,
        "one host fault: {blind:?}\n{}",
        vm.log()
    );
    assert_eq!(host_faults[0]["layer"], "hypervisor");
    let acted: Vec<&Value> = blind.iter().filter(|r| destructive(r)).collect();
    assert!(acted.is_empty(), "no action while blind: {acted:?}");
    common::wait_until(
        Duration::from_secs(60),
        "the hang's reset once libvirtd answers",
        || {
            vm.records_since(t_cont)
                .iter()
                .any(|r| r["record"] == "intent" && r["action"]["kind"] == "reset")
        },
    );
    vm.wait_healthy(90);
    let closed = vm
        .records_since(t0)
        .into_iter()
        .any(|r| r["record"] == "closed" && r["kind"] == "hypervisor-unresponsive");
    assert!(
        closed,
        "the host fault closes when libvirtd answers: {}",
        vm.log()
    );
    eprintln!(
        "libvirtd stopped 20 s during a hang: hypervisor-unresponsive, no action while blind, \
         the hang reset after it answered"
    );

    // The guest writes 40 MiB to its second disk; the qcow2 under it can
    // grow by 32 MiB at most before the tmpfs is full: the write fails
    // with ENOSPC and libvirt pauses the domain (error_policy='stop').
    // vigild names the host's filesystem full (host-storage-full, once, on
    // the host, naming the VM) and the VM's pause as host-storage with the
    // host's reason; it resumes the VM only once space is back (the test
    // deletes the ballast), and the write completes.
    vm.wait_healthy(90);
    let mut freed_at = 0;
    case(
        &mut vm,
        rows,
        "host storage full",
        "host-storage",
        "host-storage",
        Some("alert"),
        |vm| vm.shell("dd if=/dev/zero of=/dev/vdb bs=1M count=40 conv=fsync 2>/dev/null &"),
        |vm| {
            // Space still short: no resume, however long.
            std::thread::sleep(Duration::from_secs(12));
            let recs = vm.records_since(0);
            let resumed: Vec<&Value> = recs
                .iter()
                .filter(|r| r["record"] == "intent" && r["action"]["kind"] == "resume")
                .collect();
            assert!(resumed.is_empty(), "resumed into a full disk: {resumed:?}");
            let state = String::from_utf8(virsh(&["domstate", DOMAIN, "--reason"]).stdout).unwrap();
            assert!(state.contains("paused"), "still paused: {state}");
            let host: Vec<&Value> = recs
                .iter()
                .filter(|r| r["record"] == "fault" && r["kind"] == "host-storage-full")
                .collect();
            assert_eq!(
                host.len(),
                1,
                "one host-level fault: {host:?}\n{}",
                vm.log()
            );
            assert_eq!(host[0]["vm"], "(host)");
            assert_eq!(host[0]["layer"], "host-storage");
            let ev = host[0]["evidence"].to_string();
            assert!(ev.contains(DOMAIN) && ev.contains("is full"), "{ev}");
            freed_at = now_ms();
            std::fs::remove_file(&ballast).unwrap();
        },
    );
    let recs = vm.records_since(freed_at);
    assert!(
        recs.iter()
            .any(|r| r["record"] == "intent" && r["action"]["kind"] == "resume"),
        "resumed once space was back: {}",
        vm.log()
    );
    assert!(
        recs.iter()
            .any(|r| r["record"] == "closed" && r["kind"] == "host-storage-full"),
        "the host-level fault closes with space back: {}",
        vm.log()
    );
    // Linked both ways, whichever came first: the VM's fault names the
    // open host-level fault, or the host-level fault the VM's it explains.
    let all = vm.records_since(0);
    let find = |kind: &str| {
        all.iter()
            .find(|r| r["record"] == "fault" && r["kind"] == kind)
            .unwrap()
            .clone()
    };
    let (own, host) = (find("host-storage"), find("host-storage-full"));
    let (own_ev, host_ev) = (own["evidence"].to_string(), host["evidence"].to_string());
    assert!(
        own_ev.contains("no space"),
        "the VM's fault says why: {own_ev}"
    );
    let linked = own_ev.contains(&format!("host-storage-full #{}", host["id"]))
        || host_ev.contains(&format!("{DOMAIN} #{} host-storage", own["id"]));
    assert!(linked, "linked: {own_ev} / {host_ev}");
    let done = vm.shell_out("wait; echo written=$?", 60);
    assert!(done.contains("written=0"), "the write completed: {done}");
    eprintln!("host filesystem full: VM paused (ENOSPC), host-storage-full named, resumed once space was back");
    drop(vm);
}
