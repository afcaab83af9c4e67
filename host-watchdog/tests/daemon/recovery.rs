//! Faults injected into a running rig, and the recoveries vigild journals.

use super::*;

#[test]
fn healthy_steady_state_takes_no_action() {
    let mut rig = Rig::new("");
    rig.start_agent("web", None);
    rig.start_agent("db", None);
    rig.wait_healthy("web");
    rig.wait_healthy("db");
    std::thread::sleep(Duration::from_secs(5));
    let recs = rig.records();
    assert!(
        recs.iter().all(|r| r["record"] == "transition"),
        "unexpected records: {recs:#?}"
    );
    let list = rig.ctl_json(&["list"]);
    let states: Vec<(&str, &str)> = list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["domain"].as_str().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("db", "healthy"), ("legacy", "healthy"), ("web", "healthy")]
    );
    assert_eq!(list["vms"][2]["agent_connected"], true);
    assert_eq!(list["vms"][1]["agent_expected"], false);
    // The table form.
    let out = rig.ctl(&["list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("DOMAIN"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("web") && l.contains("healthy") && l.contains(" up ")),
        "{text}"
    );
}

#[test]
fn agent_killed_and_restarted_is_agent_down_without_reset() {
    let mut rig = Rig::new("");
    rig.start_agent("web", None);
    rig.wait_healthy("web");
    rig.kill_agent("web");
    let fault = rig.wait_record(10, "agent-down", "fault", "web", |r| {
        r["kind"] == "agent-down"
    });
    assert_eq!(fault["layer"], "agent");
    let detect = fault["detected"].as_u64().unwrap() - fault["onset"].as_u64().unwrap();
    assert!(detect < 3000, "detection took {detect} ms");
    rig.start_agent("web", None);
    let closed = rig.wait_record(15, "agent-down closed", "closed", "web", |r| {
        r["kind"] == "agent-down"
    });
    assert_eq!(closed["how"], "cleared");
    let intents = rig.intents("web");
    assert!(
        intents.iter().all(|k| k.contains("alert")),
        "only an alert, no reset: {intents:?}"
    );
    rig.wait_healthy("web");
}

#[test]
fn agent_killed_for_good_escalates_along_the_ladder() {
    let ladder = "[engine.ladders.agent-down]\nrungs = [{ action = \"alert\", verify_ms = 2000 }, { action = \"reboot\", verify_ms = 2000 }]\nexhausted = \"hold\"\n";
    let mut rig = Rig::new(ladder);
    rig.start_agent("web", None);
    rig.wait_healthy("web");
    rig.kill_agent("web");
    rig.wait_record(10, "agent-down", "fault", "web", |r| {
        r["kind"] == "agent-down"
    });
    rig.wait_record(15, "reboot rung", "intent", "web", |r| {
        r["action"]["kind"] == "reboot"
    });
    rig.wait_record(15, "reboot outcome", "outcome", "web", |r| {
        r["ok"] == true && r["detail"].as_str().unwrap().contains("reboot")
    });
    // The agent never returns: the ladder ends in hold, the VM stays faulted.
    rig.wait_record(15, "hold", "transition", "web", |r| {
        r["why"].as_str().unwrap().contains("holding")
    });
    assert_eq!(rig.state("web"), "faulted");
    let intents = rig.intents("web");
    assert_eq!(intents, ["\"alert\"", "\"reboot\""]);
}

#[test]
fn watched_service_stopped_is_restarted_through_the_agent() {
    let mut rig = Rig::new("");
    rig.start_service();
    let cmd = restart_cmd(&rig);
    rig.start_agent("web", Some(&cmd));
    rig.wait_healthy("web");
    let pid = rig.kill_service();
    let fault = rig.wait_record(10, "service-down", "fault", "web", |r| {
        r["kind"] == "service-down"
    });
    assert_eq!(fault["layer"], "guest-service");
    rig.wait_record(10, "restart intent", "intent", "web", |r| {
        r["action"]["kind"]["restart-service"] == rig.svc.as_str()
    });
    let closed = rig.wait_record(15, "recovered", "closed", "web", |r| {
        r["kind"] == "service-down"
    });
    assert_eq!(closed["how"], "recovered");
    assert!(
        rig.find("outcome", "web", |r| r["ok"] == true
            && r["detail"] == "agent: succeeded")
            .len()
            == 1
    );
    let new_pid = rig.service_pid().unwrap();
    assert_ne!(new_pid, pid);
    rig.services.push(new_pid);
}

#[test]
fn reports_of_a_full_disk_are_recorded_and_alerted() {
    let rig = Rig::new("");
    let mut a = FakeAgent::connect(&rig, "web");
    let full = Snapshot {
        filesystems: vec![Filesystem {
            mount_point: "/".into(),
            device: "/dev/vda1".into(),
            fs_type: "ext4".into(),
            size_bytes: 100 << 20,
            avail_bytes: 2 << 20,
            inodes_total: 1000,
            inodes_free: 500,
            read_only: false,
        }],
        ..Snapshot::default()
    };
    for seq in 1..=4 {
        a.send(&Message::Heartbeat(Heartbeat {
            seq,
            uptime_ms: seq * 500,
        }));
        std::thread::sleep(Duration::from_millis(200));
    }
    a.send(&Message::Report(Report {
        seq: 1,
        trigger: ReportTrigger::Periodic,
        snapshot: full,
    }));
    let fault = rig.wait_record(10, "disk-full", "fault", "web", |r| {
        r["kind"] == "disk-full"
    });
    assert_eq!(fault["layer"], "guest-storage");
    assert!(
        fault["evidence"][0].as_str().unwrap().contains("98% full"),
        "{fault}"
    );
    rig.wait_record(5, "alert", "intent", "web", |r| {
        r["action"]["kind"] == "alert"
    });
    assert!(rig.log().contains("ALERT vm=web"));
    let _ = a.reader.read_message(); // keep the reader alive until here
}

/// Stopped on purpose stays stopped: a destroy outside the engine's own
/// actions is the operator's, the domain is left off and no fault is
/// named; the always-on setting starts it like a crashed one.
#[test]
fn an_operator_destroy_is_left_off_unless_the_vm_is_always_on() {
    let mut rig = Rig::new("");
    rig.start_agent("db", None);
    rig.wait_healthy("db");
    assert!(rig.ctl(&["action", "db", "destroy"]).status.success());
    std::thread::sleep(Duration::from_secs(4));
    let status = rig.ctl_json(&["status", "db"]);
    assert_eq!(status["state"], "off", "{status}");
    assert!(
        rig.find("fault", "db", |_| true).is_empty(),
        "{:?}",
        rig.records()
    );
    drop(rig);

    let mut rig = Rig::new("[engine]\nrestart_stopped_by_operator = true\n");
    rig.start_agent("db", None);
    rig.wait_healthy("db");
    let out = rig.ctl(&["action", "db", "destroy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fault = rig.wait_record(10, "vm-crashed", "fault", "db", |r| {
        r["kind"] == "vm-crashed"
    });
    assert_eq!(fault["layer"], "hypervisor");
    rig.wait_record(10, "start", "intent", "db", |r| {
        r["action"]["kind"] == "start"
    });
    let closed = rig.wait_record(15, "recovered", "closed", "db", |r| {
        r["kind"] == "vm-crashed"
    });
    assert_eq!(closed["how"], "recovered");
    assert_eq!(rig.ctl_json(&["status", "db"])["domain_state"], "running");
}

#[test]
fn operator_maintenance_suppresses_actions() {
    let mut rig = Rig::new("");
    rig.start_service();
    let cmd = restart_cmd(&rig);
    rig.start_agent("web", Some(&cmd));
    rig.wait_healthy("web");
    let on = rig.ctl_json(&["maintenance", "web", "on"]);
    assert_eq!(on["state"], "maintenance");
    rig.kill_service();
    std::thread::sleep(Duration::from_secs(7)); // a report and watch ticks pass
    assert!(
        rig.find("fault", "web", |_| true).is_empty(),
        "no fault during maintenance"
    );
    assert!(
        rig.service_pid().is_none(),
        "nothing restarted during maintenance"
    );
    let off = rig.ctl_json(&["maintenance", "web", "off"]);
    assert_eq!(off["state"], "healthy");
    rig.wait_record(15, "service-down after maintenance", "fault", "web", |r| {
        r["kind"] == "service-down"
    });
    rig.wait_record(15, "recovered", "closed", "web", |r| {
        r["kind"] == "service-down"
    });
    if let Some(p) = rig.service_pid() {
        rig.services.push(p);
    }
}

#[test]
fn vigild_killed_during_a_recovery_resumes_without_repeating_it() {
    let mut rig = Rig::new("");
    rig.start_service();
    // A slow restart: vigild is killed while it runs.
    let cmd = format!("sleep 3; {}", restart_cmd(&rig));
    rig.start_agent("web", Some(&cmd));
    rig.wait_healthy("web");
    rig.kill_service();
    rig.wait_record(10, "restart intent", "intent", "web", |r| {
        r["action"]["kind"]["restart-service"] == rig.svc.as_str()
    });
    rig.kill_vigild(); // -9, mid-recovery: the intent is journaled, its outcome is not
    rig.start_vigild();
    let settled = rig.wait_record(10, "interrupted outcome", "outcome", "web", |r| {
        r["detail"].as_str().unwrap().contains("interrupted")
    });
    assert_eq!(settled["ok"], false);
    // The agent finishes the restart on its own; the new vigild sees a
    // healthy VM after its boot grace: no second restart, no reset.
    rig.wait_healthy("web");
    std::thread::sleep(Duration::from_secs(3));
    let intents = rig.intents("web");
    assert_eq!(intents.len(), 1, "no action repeated: {intents:?}");
    assert!(rig.service_pid().is_some());
    // The fault the first vigild opened resumed on the second and was closed
    // as recovered (its interrupted action counted), not lost.
    let closed = rig.wait_record(10, "closed", "closed", "web", |r| {
        r["kind"] == "service-down"
    });
    assert_eq!(closed["how"], "recovered");
    assert_eq!(rig.find("fault", "web", |_| true).len(), 1);
    // Action numbering continued across the restart.
    let ids: Vec<u64> = rig
        .find("intent", "web", |_| true)
        .iter()
        .map(|r| r["action"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    if let Some(p) = rig.service_pid() {
        rig.services.push(p);
    }
}

#[test]
fn a_fault_recurring_after_a_vigild_restart_continues_its_ladder() {
    let mut rig = Rig::new("");
    rig.start_service();
    let cmd = restart_cmd(&rig);
    rig.start_agent("web", Some(&cmd));
    rig.wait_healthy("web");
    rig.kill_service();
    let first = rig.wait_record(10, "first fault", "fault", "web", |r| {
        r["kind"] == "service-down"
    });
    rig.wait_record(15, "recovered", "closed", "web", |r| {
        r["id"] == first["id"] && r["how"] == "recovered"
    });
    if let Some(p) = rig.service_pid() {
        rig.services.push(p);
    }
    // vigild restarts; the service dies again well within the recurrence
    // window: the restart did not hold, so this is attempt 2, not 1.
    rig.kill_vigild();
    rig.start_vigild();
    rig.wait_healthy("web");
    rig.kill_service();
    let again = rig.wait_record(15, "recurring fault", "fault", "web", |r| {
        r["kind"] == "service-down" && r["id"] != first["id"]
    });
    let evidence = again["evidence"].to_string();
    assert!(evidence.contains("recurs"), "{evidence}");
    let intent = rig.wait_record(20, "second restart", "intent", "web", |r| {
        r["action"]["fault"] == again["id"]
    });
    assert_eq!(intent["attempt"], 2, "{intent}");
    assert!(intent["action"]["kind"]["restart-service"].is_string());
    rig.wait_record(20, "recovered again", "closed", "web", |r| {
        r["id"] == again["id"]
    });
    if let Some(p) = rig.service_pid() {
        rig.services.push(p);
    }
}

/// Keepalives reach a running guest's session, and stop the moment its
/// boot ends: a write to a connection a reset or stopped guest no longer
/// has wedges vhost-device-vsock, and the next boot's agent never gets
/// through (found on a real VM: a reset guest stayed unmonitored).
#[test]
fn a_guest_whose_boot_ended_is_not_written_to() {
    let rig = Rig::with_top("keepalive_interval_ms = 200\n", "");
    let mut a = FakeAgent::connect(&rig, "db");
    assert!(a.version >= 2, "keepalives need version 2 on");
    a.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let keepalives = |a: &mut FakeAgent, secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut n = 0;
        while Instant::now() < end {
            if let Ok(Some(Message::Keepalive(k))) = a.reader.read_message() {
                assert_eq!(k.interval_ms, 200);
                n += 1;
            }
        }
        n
    };
    let before = keepalives(&mut a, 2);
    assert!(before >= 4, "{before} keepalives in 2 s at 200 ms");
    assert!(rig.ctl(&["action", "db", "destroy"]).status.success());
    std::thread::sleep(Duration::from_millis(300));
    let _ = keepalives(&mut a, 0); // what was queued before the destroy
    let after = keepalives(&mut a, 2);
    assert_eq!(
        after, 0,
        "keepalives written to a destroyed guest's session"
    );
}

/// A guest that goes silent while its disks and network keep working is
/// busy, not hung: the hypervisor's I/O counters reach the engine through
/// the real daemon path (they were once gathered and dropped), and the
/// hang is named only after `io_veto_limit_ms`, with the reason. (The test
/// driver's block counters advance with the clock.)
#[test]
fn io_progress_holds_off_a_hang_verdict() {
    let rig = Rig::new("[engine]\nio_veto_limit_ms = 6000\n");
    let mut a = FakeAgent::connect(&rig, "db");
    for seq in 1..=6 {
        a.send(&Message::Heartbeat(Heartbeat {
            seq,
            uptime_ms: seq * 500,
        }));
        std::thread::sleep(Duration::from_millis(500));
    }
    rig.wait_healthy("db");
    // Silent from here on, connection open.
    let f = rig.wait_record(30, "a silent db's fault", "fault", "db", |_| true);
    let evidence = f["evidence"].to_string();
    assert_eq!(f["kind"], "guest-hang", "{f}");
    assert!(evidence.contains("I/O progressing but silent"), "{f}");
    let waited = f["located"].as_u64().unwrap() - f["onset"].as_u64().unwrap();
    assert!(
        waited >= 6000,
        "named after {waited} ms, before the veto ran out: {f}"
    );
    drop(a);
}
