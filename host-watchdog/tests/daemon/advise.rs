//! The advisor through vigild and libvirt (the test driver): OOM kills
//! that keep coming are a recurring-oom warning; `vigilctl advise` turns
//! it into a memory recommendation with its evidence; `--apply` resizes
//! the domain's definition through libvirt, journaled as a `reconfigure`
//! action with before and after; `--revert` puts it back. Bad requests get
//! clear errors and change nothing.

use super::*;
use vigil_protocol::snapshot::Memory;

fn report(seq: u64, kills: u64) -> Message {
    Message::Report(Report {
        seq,
        trigger: ReportTrigger::Periodic,
        snapshot: Snapshot {
            uptime_ms: seq * 500,
            memory: Some(Memory {
                total_bytes: 256 << 20,
                available_bytes: 100 << 20,
                oom_kills: Some(kills),
                ..Memory::default()
            }),
            ..Snapshot::default()
        },
    })
}

fn memory_kib(rig: &Rig) -> u64 {
    let v = rig.ctl_json(&["--json", "advise", "web"]);
    v["vms"][0]["sizing"]["memory_kib"].as_u64().unwrap()
}

fn outcome(rig: &Rig, action: u64) -> Value {
    rig.wait_record(10, "the action's outcome", "outcome", "web", |r| {
        r["id"] == action
    })
}

#[test]
fn recurring_ooms_are_advised_applied_and_reverted() {
    let rig = Rig::new("[advisor]\nmin_evidence = 1\n");
    let mut a = FakeAgent::connect(&rig, "web");
    let out = rig.ctl(&["advise", "web"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("nothing to recommend"), "{text}");
    for (seq, kills) in [(1, 0), (2, 1), (3, 2)] {
        a.send(&Message::Heartbeat(Heartbeat {
            seq,
            uptime_ms: seq * 500,
        }));
        a.send(&report(seq, kills));
        std::thread::sleep(Duration::from_millis(300));
    }
    rig.wait_record(10, "recurring-oom", "warning", "web", |r| {
        r["kind"] == "recurring-oom"
    });
    let before = memory_kib(&rig);
    let out = rig.ctl(&["advise", "web"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let want = (before * 3 / 2).div_ceil(131_072) * 131_072;
    assert!(
        text.contains(&format!(
            "raise memory from {} MiB to {} MiB",
            before / 1024,
            want / 1024
        )) && text.contains("because: ")
            && text.contains("vigilctl advise web --apply memory"),
        "{text}"
    );

    // Bad requests: clear errors, nothing changed.
    let bad = rig.ctl(&["advise", "web", "--apply", "disks"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("applicable now: memory"));
    assert_eq!(rig.ctl(&["advise", "--apply"]).status.code(), Some(2));
    assert_eq!(
        rig.ctl(&["advise", "web", "--revert", "999"]).status.code(),
        Some(3)
    );
    assert_eq!(rig.ctl(&["advise", "nosuch"]).status.code(), Some(3));
    assert_eq!(memory_kib(&rig), before);

    // Apply: the definition has the new size; the journal has the action.
    let v = rig.ctl_json(&["--json", "advise", "web", "--apply", "memory"]);
    let id = v["action"].as_u64().unwrap();
    let o = outcome(&rig, id);
    assert_eq!(o["ok"], true, "{o}\n{}", rig.log());
    assert_eq!(memory_kib(&rig), want);
    let intent = rig.find("intent", "web", |r| r["action"]["id"] == id);
    assert_eq!(
        intent[0]["action"]["kind"]["reconfigure"]["memory_kib"],
        serde_json::json!([before, want]),
        "{intent:?}"
    );

    // Revert: back to the size before.
    let v = rig.ctl_json(&["--json", "advise", "web", "--revert", &id.to_string()]);
    let back = v["action"].as_u64().unwrap();
    assert_eq!(outcome(&rig, back)["ok"], true);
    assert_eq!(memory_kib(&rig), before);
    // A second revert finds the size no longer what the action set.
    let again = rig.ctl(&["advise", "web", "--revert", &id.to_string()]);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("changed since"));
    // Never while an operator works on it (nor while faulted).
    assert!(rig.ctl(&["maintenance", "web", "on"]).status.success());
    let refused = rig.ctl(&["advise", "web", "--apply", "memory"]);
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("web is in state maintenance"));
    assert_eq!(memory_kib(&rig), before);
}
