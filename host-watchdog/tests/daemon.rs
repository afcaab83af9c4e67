//! vigild end to end without VMs: real `vigild`, real `vigil-agent`
//! processes over Unix sockets, libvirt's test driver with three domains
//! (tests/fixtures/node.xml), `vigilctl` as the operator. Every process is
//! killed when its test ends, pass or fail.
//!
//! Needs `target/debug/vigil-agent` (scripts/test.sh builds the workspace
//! before testing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_protocol::io::{write_message, MessageReader};
use vigil_protocol::snapshot::{Filesystem, Snapshot};
use vigil_protocol::*;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn agent_bin() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or(workspace().join("target"), PathBuf::from);
    let p = dir.join("debug/vigil-agent");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --workspace` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A watched service name unique to this rig (tests run in parallel and
/// agents match processes by name).
fn service_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("svc{}x{n}", std::process::id() % 100_000)
}

/// A test rig: one vigild, its agents, a temp dir. Drop kills everything.
struct Rig {
    svc: String,
    dir: tempfile::TempDir,
    vigild: Option<Child>,
    agents: Vec<(String, Child)>,
    services: Vec<u32>,
    metrics_port: u16,
    extra: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (_, c) in &mut self.agents {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(c) = &mut self.vigild {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.services {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
        // Services the agents restarted: find them by their unique path.
        let svc = self.dir.path().join(&self.svc);
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(format!("^{}", svc.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Rig {
    fn new(extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let svc = service_name();
        std::fs::copy("/bin/sleep", dir.path().join(&svc)).unwrap();
        let mut rig = Rig {
            svc,
            dir,
            vigild: None,
            agents: Vec::new(),
            services: Vec::new(),
            metrics_port: free_port(),
            extra: extra.into(),
        };
        rig.start_vigild();
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_vigild(&mut self) {
        let d = self.dir.path().display().to_string();
        let config = format!(
            "libvirt_uri = \"test://{}\"\njournal = \"{d}/journal.db\"\ncontrol_socket = \"{d}/control.sock\"\n\
             metrics_listen = \"127.0.0.1:{}\"\n\
             [[vm]]\ndomain = \"web\"\nagent = \"unix://{d}/web.sock\"\n\
             [[vm]]\ndomain = \"db\"\nagent = \"unix://{d}/db.sock\"\n{}",
            workspace().join("tests/fixtures/node.xml").canonicalize().unwrap().display(),
            self.metrics_port,
            self.extra
        );
        std::fs::write(self.path("vigild.toml"), config).unwrap();
        let _ = std::fs::remove_file(self.path("control.sock"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("vigild.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigild"))
            .arg("--config")
            .arg(self.path("vigild.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.vigild = Some(child);
        wait_until(Duration::from_secs(10), "control socket", || {
            UnixStream::connect(self.path("control.sock")).is_ok()
        });
    }

    fn kill_vigild(&mut self) {
        let mut c = self.vigild.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    fn start_service(&mut self) {
        // Not `.output()`: the forked service would hold its pipes open.
        let st = Command::new("setsid")
            .arg("-f")
            .arg(self.path(&self.svc))
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        wait_until(Duration::from_secs(5), "service running", || {
            self.service_pid().is_some()
        });
        if let Some(p) = self.service_pid() {
            self.services.push(p);
        }
    }

    fn service_pid(&self) -> Option<u32> {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(format!("^{}", self.path(&self.svc).display()))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Start an agent for `vm`; `restart` is the restart command's shell text.
    fn start_agent(&mut self, vm: &str, restart: Option<&str>) {
        let d = self.dir.path().display().to_string();
        let mut conf = format!(
            "connect = \"unix://{d}/{vm}.sock\"\nstate_dir = \"{d}/{vm}-run\"\nkmsg = \"{d}/{vm}-kmsg\"\n[limits]\nmax_backoff_ms = 500\n"
        );
        if let Some(cmd) = restart {
            conf.push_str(&format!(
                "[watch]\nprocesses = [\"{svc}\"]\n[[allow]]\naction = \"restart-service\"\nname = \"{svc}\"\nargv = [\"/bin/sh\", \"-c\", \"{cmd}\"]\n",
                svc = self.svc
            ));
        }
        std::fs::write(self.path(&format!("{vm}-agent.toml")), conf).unwrap();
        std::fs::write(self.path(&format!("{vm}-kmsg")), "").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{vm}-agent.log")))
            .unwrap();
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(self.path(&format!("{vm}-agent.toml")))
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agents.push((vm.to_string(), child));
    }

    fn kill_agent(&mut self, vm: &str) {
        let i = self.agents.iter().position(|(n, _)| n == vm).unwrap();
        let (_, mut c) = self.agents.remove(i);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn ctl(&self, args: &[&str]) -> Output {
        common::ctl(&self.path("control.sock"), args)
    }

    fn ctl_json(&self, args: &[&str]) -> Value {
        common::ctl_json(&self.path("control.sock"), args)
    }

    fn state(&self, vm: &str) -> String {
        self.ctl_json(&["status", vm])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every journal record, in order.
    fn records(&self) -> Vec<Value> {
        common::records(&self.path("control.sock"))
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    fn find(&self, kind: &str, vm: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        common::find(&self.path("control.sock"), kind, vm, pred)
    }

    fn wait_record(
        &self,
        secs: u64,
        what: &str,
        kind: &str,
        vm: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        common::wait_record(
            &self.path("control.sock"),
            secs,
            what,
            kind,
            vm,
            pred,
            || self.log(),
        )
    }

    fn wait_healthy(&self, vm: &str) {
        wait_until(Duration::from_secs(20), &format!("{vm} healthy"), || {
            self.state(vm) == "healthy"
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("vigild.log")).unwrap_or_default()
    }

    fn intents(&self, vm: &str) -> Vec<String> {
        self.find("intent", vm, |_| true)
            .iter()
            .map(|r| r["action"]["kind"].to_string())
            .collect()
    }

    fn scrape(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }
}

use common::wait_until;

fn restart_cmd(rig: &Rig) -> String {
    format!("/usr/bin/setsid -f {} 3600", rig.path(&rig.svc).display())
}

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
    let pid = rig.service_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
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

/// A scripted agent: handshake, heartbeats, then whatever the test sends.
struct FakeAgent {
    stream: UnixStream,
    reader: MessageReader<UnixStream>,
}

impl FakeAgent {
    fn connect(rig: &Rig, vm: &str) -> FakeAgent {
        let stream = UnixStream::connect(rig.path(&format!("{vm}.sock"))).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = MessageReader::new(stream.try_clone().unwrap(), DEFAULT_MAX_PAYLOAD);
        let mut a = FakeAgent {
            stream,
            reader: MessageReader::new(UnixStream::pair().unwrap().0, 1),
        };
        let hello = Hello {
            versions: SUPPORTED,
            agent_version: "fake".into(),
            boot_id: "fake-boot".into(),
            hostname: vm.into(),
            kernel_release: "6.1".into(),
            capabilities: vec![],
        };
        a.send(&Message::Hello(hello));
        assert!(matches!(
            reader.read_message().unwrap(),
            Some(Message::Welcome(_))
        ));
        reader.decoder().set_version(1);
        a.reader = reader;
        a
    }

    fn send(&mut self, m: &Message) {
        write_message(&mut self.stream, m, 1, DEFAULT_MAX_PAYLOAD).unwrap();
    }
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

#[test]
fn a_destroyed_domain_is_vm_crashed_and_started() {
    let mut rig = Rig::new("");
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
    let pid = rig.service_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
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
    let pid = rig.service_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
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

fn vigild_rss_kib(rig: &Rig) -> u64 {
    let pid = rig.vigild.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn rejected(metrics: &str, reason: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("vigil_guest_frames_rejected_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn hostile_clients_are_cut_off_and_counted_without_hurting_other_vms() {
    let mut rig = Rig::new("");
    rig.start_agent("web", None);
    rig.wait_healthy("web");
    let rss_before = vigild_rss_kib(&rig);
    let sock = rig.path("db.sock");
    let closed = |mut s: UnixStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    };
    // 1. An oversized frame header (1 GiB): rejected before allocating.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&[b'V', b'G', 1, 1, 0, 0, 0, 0x40]).unwrap();
    assert!(closed(s));
    // 2. Garbage.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed(s));
    // 3. A flood after a valid hello.
    let mut a = FakeAgent::connect(&rig, "db");
    let mut flood = Vec::new();
    for seq in 0..2000u64 {
        flood.extend(
            encode(
                &Message::Heartbeat(Heartbeat {
                    seq,
                    uptime_ms: seq,
                }),
                1,
            )
            .unwrap(),
        );
    }
    let _ = a.stream.write_all(&flood);
    assert!(closed(a.stream.try_clone().unwrap()));
    // 4. Many connections that never say hello, in parallel.
    let idle: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(6)); // past the hello deadline
    for s in idle {
        assert!(closed(s));
    }
    let m = rig.scrape();
    assert!(rejected(&m, "oversized") >= 1, "{m}");
    assert!(rejected(&m, "garbage") >= 1, "{m}");
    assert!(rejected(&m, "flood") >= 1, "{m}");
    assert!(rejected(&m, "hello-timeout") >= 50, "{m}");
    // The other VM did not notice; vigild's memory stayed bounded.
    assert_eq!(rig.state("web"), "healthy");
    assert!(rig.find("fault", "web", |_| true).is_empty());
    let rss_after = vigild_rss_kib(&rig);
    assert!(
        rss_after < rss_before + 16 * 1024,
        "vigild RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        rig.vigild.as_mut().unwrap().try_wait().unwrap().is_none(),
        "vigild still running"
    );
}

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
    let mut rig = Rig::new("");
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
    let mut rig = Rig::new("");
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
