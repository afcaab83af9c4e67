//! Prevention and sizing on the real VM: a data disk filling at a steady
//! rate is predicted full (a warning with an ETA, no action) before the
//! disk-full fault; after an OOM kill and the memory added for it, the
//! advisor recommends more memory, `--apply` writes it into the domain's
//! persistent definition through libvirt (journaled), and the guest has
//! it after its next start.

use super::*;

/// The data disk fills at a steady ~2 MiB/s: predicted full (a warning, no
/// action) before it is full (the disk-full fault, alerted).
pub fn disk_fills_steadily(vm: &mut Vm, rows: &mut Vec<Row>) {
    let t_fill = now_ms();
    case(
        vm,
        rows,
        "disk filled",
        "disk-full",
        "guest-storage",
        Some("alert"),
        |vm| {
            // The loop stops at ENOSPC or when told to (the heal): left
            // running past a delete it refilled the disk during the next
            // cases, and its open file made `remount,ro` fail (busy).
            vm.shell(
                "rm -f /tmp/fill.stop; (i=0; while [ ! -e /tmp/fill.stop ] && dd if=/dev/zero of=/data/fill bs=1M count=1 seek=$i conv=notrunc 2>/dev/null; do i=$((i+1)); sleep 0.5; done) & echo $! > /tmp/fill.pid",
            );
            // The warning first (the case then waits for the fault).
            vm.wait(90, "predicted-full", "warning", |r| {
                r["kind"] == "predicted-full"
            });
        },
        |vm| {
            vm.shell_out(
                "touch /tmp/fill.stop; while kill -0 $(cat /tmp/fill.pid) 2>/dev/null; do sleep 0.2; done; rm -f /data/fill; sync",
                60,
            );
        },
    );
    predicted_before_full(vm, t_fill);
}

/// The predicted-full warning for /data came before the disk-full fault,
/// with an ETA after it, and cleared once the fill was deleted.
fn predicted_before_full(vm: &Vm, since: u64) {
    let recs: Vec<(u64, Value)> = common::records(&vm.sock())
        .into_iter()
        .filter(|(t, _)| *t >= since)
        .collect();
    let (warned, warning) = recs
        .iter()
        .find(|(_, r)| {
            r["record"] == "warning" && r["kind"] == "predicted-full" && r["subject"] == "/data"
        })
        .unwrap_or_else(|| {
            panic!(
                "no predicted-full warning for /data: {recs:?}\n{}",
                vm.log()
            )
        });
    let fault = recs
        .iter()
        .map(|(_, r)| r)
        .find(|r| r["record"] == "fault" && r["kind"] == "disk-full")
        .unwrap();
    let full = fault["detected"].as_u64().unwrap();
    assert!(
        *warned < full,
        "warned at {warned}, full at {full}: {recs:?}"
    );
    let eta = warning["eta"].as_u64().unwrap();
    eprintln!(
        "disk filling steadily: predicted-full {} ms before the disk-full fault (predicted full {} ms ahead; {})",
        full - warned,
        eta.saturating_sub(*warned),
        warning["evidence"].as_str().unwrap_or("")
    );
    let cleared = recs.iter().any(|(t, r)| {
        r["record"] == "warning-cleared" && r["kind"] == "predicted-full" && t > warned
    });
    assert!(cleared, "the delete clears the warning: {recs:?}");
}

/// The advisor's memory recommendation, applied; returns the new size (KiB).
pub fn advise_and_apply_memory(vm: &Vm) -> u64 {
    let sock = vm.sock();
    let out = common::ctl(&sock, &["advise", DOMAIN]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("vigilctl advise {DOMAIN}:\n{text}");
    let v = common::ctl_json(&sock, &["advise", DOMAIN]);
    let advice = v["vms"][0]["advice"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let memory = advice
        .iter()
        .find(|a| a["item"] == "memory")
        .unwrap_or_else(|| {
            panic!(
                "no memory recommendation after an OOM kill: {v}\n{}",
                vm.log()
            )
        });
    let [before, after] = [0, 1].map(|i| memory["resize"]["memory_kib"][i].as_u64().unwrap());
    assert!(after > before, "{memory}");
    let applied = common::ctl_json(&sock, &["advise", DOMAIN, "--apply", "memory"]);
    let id = applied["action"].as_u64().unwrap();
    let o = vm.wait(30, "the reconfigure outcome", "outcome", |r| r["id"] == id);
    assert_eq!(o["ok"], true, "{o}\n{}", vm.log());
    let xml = String::from_utf8(virsh(&["dumpxml", "--inactive", DOMAIN]).stdout).unwrap();
    assert!(
        xml.contains(&format!("<memory unit='KiB'>{after}</memory>"))
            && xml.contains(&format!(
                "<currentMemory unit='KiB'>{after}</currentMemory>"
            )),
        "the persistent definition: {xml}"
    );
    eprintln!("advise --apply memory: action #{id}, the definition now has {after} KiB (was {before} KiB)");
    after
}

/// After its next start the guest's kernel sees the memory applied.
pub fn guest_has_memory(vm: &Vm, kib: u64) {
    let sock = vm.sock();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = common::ctl_json(&sock, &["status", DOMAIN]);
        let total = v["last_report"]["memory"]["total_bytes"]
            .as_u64()
            .unwrap_or(0);
        // MemTotal is what the kernel manages: a little less than the
        // domain's size (the kernel's own reservations).
        if total > kib * 1024 * 9 / 10 {
            eprintln!(
                "after its start the guest has MemTotal {} KiB (the definition: {kib} KiB)",
                total / 1024
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "guest MemTotal {} KiB, not near {kib} KiB: {v}",
            total / 1024
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
