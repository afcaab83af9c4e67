//! The operator's side: vigilctl verbs, event following, /metrics, config errors.

use super::*;

/// A destroy then stands for a crash: the domain is started again.
const ALWAYS_ON: &str = "[engine]\nrestart_stopped_by_operator = true\n";

#[test]
fn vigilctl_verbs_json_and_exit_codes() {
    let mut rig = Rig::new("");
    rig.start_agent("web", None);
    rig.wait_healthy("web");
    let st = rig.ctl_json(&["status", "web"]);
    assert_eq!(st["uuid"], "11111111-2222-3333-4444-000000000001");
    assert_eq!(st["agent_version"], "0.1.0");
    // probe: a live snapshot from the agent.
    let p = rig.ctl_json(&["probe", "web"]);
    assert!(p["processes"]["total"].as_u64().unwrap() > 0, "{p}");
    let text = String::from_utf8(rig.ctl(&["probe", "web"]).stdout).unwrap();
    assert!(
        text.contains("live snapshot") && text.contains("processes:"),
        "{text}"
    );
    // A VM without an agent: a clear message and exit status 4.
    let out = rig.ctl(&["probe", "legacy"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no connected agent"));
    // Unknown domain: 3. Releasing a VM that is not quarantined: 2.
    assert_eq!(rig.ctl(&["status", "nope"]).status.code(), Some(3));
    assert_eq!(rig.ctl(&["release", "web"]).status.code(), Some(2));
    // Bad usage is clap's exit status 2.
    assert_eq!(
        rig.ctl(&["maintenance", "web", "sideways"]).status.code(),
        Some(2)
    );
    // disarm / arm.
    assert_eq!(rig.ctl_json(&["disarm"])["armed"], false);
    assert!(String::from_utf8(rig.ctl(&["list"]).stdout)
        .unwrap()
        .contains("disarmed"));
    assert_eq!(rig.ctl_json(&["arm"])["armed"], true);
    // report.
    let r = rig.ctl_json(&["report", "--since", "1h"]);
    let vms = r["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 3);
    assert!(vms
        .iter()
        .all(|v| v["availability"].as_f64().unwrap() > 0.99));
    let text = String::from_utf8(rig.ctl(&["report"]).stdout).unwrap();
    assert!(
        text.contains("AVAILABILITY") && text.contains("web"),
        "{text}"
    );
    // events --since.
    let out = rig.ctl(&["events", "--since", "10m"]);
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("first heartbeat"));
    // No daemon: 4.
    rig.kill_vigild();
    assert_eq!(rig.ctl(&["list"]).status.code(), Some(4));
}

#[test]
fn events_follow_streams_new_records() {
    let mut rig = Rig::new(ALWAYS_ON);
    rig.start_agent("db", None);
    rig.wait_healthy("db");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_vigilctl"))
        .arg("--socket")
        .arg(rig.path("control.sock"))
        .args(["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("\"vm-crashed\"") && l.contains("\"fault\""))
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(rig.ctl(&["action", "db", "destroy"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.is_finished() {
        assert!(
            Instant::now() < deadline,
            "events --follow did not show the new fault"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = lines.join().unwrap().expect("a fault line");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["record"]["kind"], "vm-crashed");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn metrics_are_scraped_and_parse() {
    let mut rig = Rig::new(ALWAYS_ON);
    rig.start_agent("web", None);
    rig.start_agent("db", None);
    rig.wait_healthy("web");
    rig.wait_healthy("db");
    rig.ctl(&["action", "db", "destroy"]);
    rig.wait_record(15, "recovered", "closed", "db", |r| {
        r["kind"] == "vm-crashed"
    });
    std::thread::sleep(Duration::from_millis(1500)); // a metrics refresh
    let body = rig.scrape();
    let (head, text) = body.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("openmetrics-text"), "{head}");
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(!name.contains("cid"), "{line}");
        samples.insert(name.to_string(), v);
    }
    assert!(text.trim_end().ends_with("# EOF"));
    let get = |k: &str| {
        samples
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };
    let web = "domain=\"web\",uuid=\"11111111-2222-3333-4444-000000000001\"";
    let db = "domain=\"db\",uuid=\"11111111-2222-3333-4444-000000000002\"";
    assert_eq!(get(&format!("vigil_vm_up{{{web}}}")), 1.0);
    assert_eq!(
        get(&format!("vigil_vm_state{{{web},state=\"healthy\"}}")),
        1.0
    );
    assert_eq!(get(&format!("vigil_quarantined{{{web}}}")), 0.0);
    assert!(get(&format!("vigil_heartbeat_age_seconds{{{web}}}")) < 5.0);
    assert_eq!(
        get(&format!(
            "vigil_faults_total{{{db},kind=\"vm-crashed\",layer=\"hypervisor\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "vigil_recoveries_total{{{db},action=\"start\",result=\"ok\"}}"
        )),
        1.0
    );
    assert_eq!(get(&format!("vigil_repair_seconds_count{{{db}}}")), 1.0);
    assert!(get(&format!("vigil_availability_ratio{{{db}}}")) < 1.0);
    assert_eq!(get(&format!("vigil_availability_ratio{{{web}}}")), 1.0);
}

#[test]
fn bad_config_is_a_clear_error_and_print_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(
        &p,
        "libvirt_uri = \"test:///default\"\nmetrics_listen = \"nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics_listen"));
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .arg("--print-config")
        .output()
        .unwrap();
    std::fs::write(&p, &out.stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .arg("--config")
        .arg(&p)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
