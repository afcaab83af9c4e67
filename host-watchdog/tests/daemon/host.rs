//! The host's own health, from its kernel log: a file of real-format
//! records stands in for /dev/kmsg (vigild reads it from its start on).

use super::*;

/// Append a record line to a stand-in kernel log.
pub fn append(path: &std::path::Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(f, "{line}").unwrap();
}

fn health(rig: &Rig) -> String {
    rig.ctl_json(&["host"])["health"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn wait_health(rig: &Rig, want: &str) {
    wait_until(Duration::from_secs(10), &format!("host {want}"), || {
        health(rig) == want
    });
}

#[test]
fn the_host_kernel_log_sets_the_host_health_and_an_operator_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg");
    // From before vigild started: never news.
    std::fs::write(
        &kmsg,
        "3,1,1000,-;EDAC MC0: 1 UE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (channel:0 slot:0 page:0x1)\n",
    )
    .unwrap();
    let mut rig = Rig::with_top(&format!("host_kmsg = \"{}\"\n", kmsg.display()), "");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(health(&rig), "healthy", "{}", rig.log());
    // A host disk error: degraded.
    append(
        &kmsg,
        "3,2,2000,-;I/O error, dev sdb, sector 1953525000 op 0x1:(WRITE) flags 0x800 phys_seg 8 prio class 0",
    );
    wait_health(&rig, "degraded");
    let h = rig.ctl_json(&["host"]);
    assert_eq!(h["reasons"][0]["reason"], "disk-errors", "{h}");
    // An uncorrected memory error: failed.
    append(
        &kmsg,
        "0,3,3000,-;EDAC MC1: 1 UE memory read error on CPU_SrcID#1_MC#0_Chan#0_DIMM#1 (channel:0 slot:1 page:0x1234 offset:0x0 grain:32)",
    );
    wait_health(&rig, "failed");
    let text = String::from_utf8(rig.ctl(&["host"]).stdout).unwrap();
    assert!(
        text.contains("host health:   failed") && text.contains("hardware"),
        "{text}"
    );
    // One host-level fault per kind and subject, each in its layer.
    let faults = rig.ctl_json(&["host"])["faults"].clone();
    let named: Vec<(String, String)> = faults
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].to_string(), f["subject"].to_string()))
        .collect();
    assert_eq!(
        named,
        [
            ("\"host-disk-errors\"".into(), "\"sdb\"".into()),
            ("\"host-hardware\"".into(), "null".into())
        ],
        "{faults}"
    );
    assert!(
        text.contains("host-disk-errors (host-storage) on sdb"),
        "{text}"
    );
    // Journaled, counted, exported.
    let changes = rig.find("host-health", "(host)", |_| true);
    let tos: Vec<&str> = changes.iter().filter_map(|r| r["to"].as_str()).collect();
    assert_eq!(tos, ["degraded", "failed"], "{changes:?}");
    std::thread::sleep(Duration::from_millis(1200));
    let body = rig.scrape();
    assert!(body.contains("vigil_host_health 2"), "{body}");
    assert!(
        body.contains("vigil_host_kernel_events_total{class=\"memory-error\"} 1"),
        "{body}"
    );
    // A restart does not heal hardware.
    rig.kill_vigild();
    rig.start_vigild();
    wait_health(&rig, "failed");
    // The operator saw to it.
    let cleared = rig.ctl_json(&["host", "--clear"]);
    assert_eq!(cleared["health"], "healthy", "{cleared}");
    let last = rig.find("host-health", "(host)", |_| true);
    assert_eq!(last.last().unwrap()["to"], "healthy", "{last:?}");
}
