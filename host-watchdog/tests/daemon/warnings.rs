//! Warnings through vigild: a guest's data disk filling steadily (one
//! report every 300 ms, with trends trusted from 3 s of them) is a
//! predicted-full warning before it is full, with its ETA in `vigilctl
//! warnings`, `/metrics` and the journal; no action is taken for it; a
//! delete clears it.

use super::*;
use vigil_protocol::snapshot::Filesystem;

const MIB: u64 = 1 << 20;

fn report(seq: u64, used_mib: u64) -> Message {
    Message::Report(Report {
        seq,
        trigger: ReportTrigger::Periodic,
        snapshot: Snapshot {
            uptime_ms: seq * 300,
            filesystems: vec![Filesystem {
                mount_point: "/data".into(),
                device: "/dev/vdb".into(),
                fs_type: "ext4".into(),
                size_bytes: 1000 * MIB,
                avail_bytes: (1000 - used_mib) * MIB,
                inodes_total: 1000,
                inodes_free: 900,
                read_only: false,
            }],
            ..Snapshot::default()
        },
    })
}

#[test]
fn a_disk_filling_steadily_is_warned_of_before_it_is_full() {
    let rig = Rig::new(
        "[engine.warnings]\nhorizon_ms = 600000\ntrend_window_ms = 6400\ntrend_min_span_ms = 3000\n",
    );
    let mut a = FakeAgent::connect(&rig, "web");
    let mut seq = 0;
    // 10 MiB per report from 100 MiB: 95 % is reached in ~25 s.
    let mut fill = |a: &mut FakeAgent, n: u64, used: &dyn Fn(u64) -> u64| {
        for i in 0..n {
            seq += 1;
            a.send(&Message::Heartbeat(Heartbeat {
                seq,
                uptime_ms: seq * 300,
            }));
            a.send(&report(seq, used(i)));
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    fill(&mut a, 16, &|i| 100 + 10 * i);
    let out = rig.ctl(&["warnings", "web"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("predicted-full") && l.contains("/data") && l.contains("fills at")),
        "{text}\n{}",
        rig.log()
    );
    let json = rig.ctl(&["--json", "warnings"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let w = &v["warnings"][0];
    let eta_s = (w["eta"].as_u64().unwrap() - v["now"].as_u64().unwrap()) / 1000;
    assert!((1..=60).contains(&eta_s), "{v}");
    let m = rig.scrape();
    assert!(
        m.lines().any(
            |l| l.starts_with("vigil_predicted_full_seconds{") && l.contains("mount=\"/data\"")
        ),
        "{m}"
    );
    assert!(
        m.contains("vigil_warning{") && m.contains("kind=\"predicted-full\""),
        "{m}"
    );
    assert_eq!(
        rig.find("warning", "web", |_| true).len(),
        1,
        "{:?}",
        rig.records()
    );
    assert!(rig.intents("web").is_empty(), "a warning takes no action");
    // A delete: the trend starts over; the warning clears, and its series go.
    fill(&mut a, 2, &|_| 100);
    let c = rig.find("warning-cleared", "web", |_| true);
    assert_eq!(c.len(), 1, "{:?}", rig.records());
    assert!(!rig.scrape().contains("vigil_predicted_full_seconds{"));
    let out = rig.ctl(&["warnings", "nosuch"]);
    assert_eq!(out.status.code(), Some(3), "an unknown domain");
}
