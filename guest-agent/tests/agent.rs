//! The real `vigil-agent` binary against a fake host on a Unix socket:
//! handshake, heartbeat cadence while a collector is stuck, immediate report
//! on a kernel error, probe, allowed and denied commands, `Bye` on SIGTERM,
//! reconnect after the host restarts, and `check`'s exit status.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_protocol::io::{write_message, MessageReader};
use vigil_protocol::snapshot::KernelEventKind;
use vigil_protocol::*;

/// The agent process; killed on drop even when an assertion fails.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(config: &Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Agent(child)
}

struct Host {
    stream: UnixStream,
    reader: MessageReader<UnixStream>,
    version: u8,
}

impl Host {
    /// Accept the agent, check its hello, welcome it (protocol 1).
    fn accept(listener: &UnixListener, heartbeat_ms: u32) -> (Host, Hello) {
        Host::accept_version(listener, heartbeat_ms, 1)
    }

    /// Accept the agent and welcome it in `version`.
    fn accept_version(listener: &UnixListener, heartbeat_ms: u32, version: u8) -> (Host, Hello) {
        listener.set_nonblocking(false).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = MessageReader::new(stream.try_clone().unwrap(), DEFAULT_MAX_PAYLOAD);
        let hello = match reader.read_message().unwrap() {
            Some(Message::Hello(h)) => h,
            other => panic!("expected hello, got {other:?}"),
        };
        let mut host = Host {
            stream,
            reader,
            version,
        };
        let settings = Settings {
            heartbeat_interval_ms: heartbeat_ms,
            report_interval_ms: 60_000,
            ..Settings::default()
        };
        host.send(&Message::Welcome(Welcome { version, settings }));
        host.reader.decoder().set_version(version);
        (host, hello)
    }

    fn send(&mut self, m: &Message) {
        write_message(&mut self.stream, m, self.version, DEFAULT_MAX_PAYLOAD).unwrap();
    }

    fn next(&mut self) -> Message {
        self.reader
            .read_message()
            .unwrap()
            .expect("agent closed the connection")
    }

    /// The next message that is not a heartbeat or a periodic/connect report.
    fn next_interesting(&mut self) -> Message {
        loop {
            match self.next() {
                Message::Heartbeat(_) => {}
                Message::Report(r)
                    if matches!(
                        r.trigger,
                        ReportTrigger::Connected | ReportTrigger::Periodic
                    ) => {}
                m => return m,
            }
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    sock: PathBuf,
    kmsg: PathBuf,
    config: PathBuf,
}

fn fixture(extra: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("host.sock");
    let kmsg = dir.path().join("kmsg");
    std::fs::write(&kmsg, "6,1,100,-;Linux version 6.1.0\n").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "connect = \"unix://{}\"\nkmsg = \"{}\"\nstate_dir = \"{}\"\n[limits]\nmax_backoff_ms = 300\n{extra}",
            sock.display(),
            kmsg.display(),
            dir.path().join("run").display()
        ),
    )
    .unwrap();
    Fixture {
        dir,
        sock,
        kmsg,
        config,
    }
}

#[test]
fn handshake_then_connect_report_then_heartbeats_at_cadence() {
    let f = fixture("");
    let listener = UnixListener::bind(&f.sock).unwrap();
    let _agent = spawn_agent(&f.config);
    let (mut host, hello) = Host::accept(&listener, 100);
    assert_eq!(hello.versions, SUPPORTED);
    assert_eq!(
        hello.boot_id.len(),
        36,
        "boot id from /proc: {:?}",
        hello.boot_id
    );
    assert!(!hello.kernel_release.is_empty());
    match host.next() {
        Message::Report(r) => {
            assert_eq!(r.trigger, ReportTrigger::Connected);
            assert!(r.snapshot.processes.unwrap().total > 0);
            assert!(r.snapshot.memory.is_some());
        }
        m => panic!("expected the connect report, got {m:?}"),
    }
    let start = Instant::now();
    let mut seqs = Vec::new();
    while start.elapsed() < Duration::from_secs(2) {
        if let Message::Heartbeat(h) = host.next() {
            seqs.push(h.seq);
        }
    }
    // 100 ms interval over 2 s: about 20, allow for a slow machine.
    assert!(
        (12..=25).contains(&seqs.len()),
        "{} heartbeats in 2 s",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "heartbeat seqs not consecutive: {seqs:?}"
    );
}

#[test]
fn heartbeats_continue_while_a_collector_is_stuck() {
    // meminfo is a FIFO nobody writes: the collector blocks opening it forever.
    let f = fixture("");
    let proc = f.dir.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    nix::unistd::mkfifo(&proc.join("meminfo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut text = std::fs::read_to_string(&f.config).unwrap();
    text = format!("proc_root = \"{}\"\n{text}", proc.display());
    std::fs::write(&f.config, text).unwrap();
    let listener = UnixListener::bind(&f.sock).unwrap();
    let _agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 100);
    let start = Instant::now();
    let mut beats = 0;
    while start.elapsed() < Duration::from_secs(2) {
        match host.next() {
            Message::Heartbeat(_) => beats += 1,
            m => panic!("the stuck collector cannot have produced {m:?}"),
        }
    }
    assert!(
        beats >= 12,
        "only {beats} heartbeats while the collector was stuck"
    );
}

#[test]
fn a_kernel_error_is_reported_at_once() {
    let f = fixture("");
    let listener = UnixListener::bind(&f.sock).unwrap();
    let _agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);
    assert!(matches!(host.next(), Message::Report(_)));
    let appended = Instant::now();
    let mut k = std::fs::OpenOptions::new()
        .append(true)
        .open(&f.kmsg)
        .unwrap();
    writeln!(
        k,
        "3,2,5000000,-;I/O error, dev vdb, sector 2048 op 0x1:(WRITE) flags 0x800"
    )
    .unwrap();
    match host.next_interesting() {
        Message::Report(r) => {
            assert_eq!(r.trigger, ReportTrigger::KernelEvent);
            let ev = &r.snapshot.kernel_events[0];
            assert_eq!(
                (ev.kind, ev.subject.as_deref()),
                (KernelEventKind::IoError, Some("vdb"))
            );
        }
        m => panic!("expected a kernel-event report, got {m:?}"),
    }
    assert!(
        appended.elapsed() < Duration::from_secs(2),
        "took {:?}",
        appended.elapsed()
    );
}

/// An agent restarted within a boot (a crash, systemd's watchdog, an
/// upgrade) does not report the kernel events an earlier agent delivered:
/// an OOM kill of hours ago is not news for the host to repair again. A
/// new event still is.
#[test]
fn a_restarted_agent_does_not_report_delivered_kernel_events_again() {
    let f = fixture("");
    let mut k = std::fs::OpenOptions::new()
        .append(true)
        .open(&f.kmsg)
        .unwrap();
    writeln!(
        k,
        "3,2,5000000,-;Out of memory: Killed process 77 (tail) total-vm:1kB"
    )
    .unwrap();
    let listener = UnixListener::bind(&f.sock).unwrap();
    let kernel_events = |host: &mut Host| -> Vec<u64> {
        // The events in the first report (the one on connect).
        match host.next() {
            Message::Report(r) => r.snapshot.kernel_events.iter().map(|e| e.seq).collect(),
            m => panic!("expected the connect report, got {m:?}"),
        }
    };
    let agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);
    // The first agent of the boot reports it (at connect or at once after).
    let mut seen = kernel_events(&mut host);
    if seen.is_empty() {
        match host.next_interesting() {
            Message::Report(r) => seen = r.snapshot.kernel_events.iter().map(|e| e.seq).collect(),
            m => panic!("expected the OOM kill, got {m:?}"),
        }
    }
    assert_eq!(seen, [2]);
    // Delivery is remembered once the send returned (at least once: an
    // agent killed in between reports the event again); wait for it.
    let mark = f.dir.path().join("run/kmsg-reported");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "delivery not remembered");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(agent);
    drop(host);
    let _agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);
    assert_eq!(
        kernel_events(&mut host),
        Vec::<u64>::new(),
        "reported again"
    );
    writeln!(
        k,
        "3,3,6000000,-;I/O error, dev vdb, sector 2048 op 0x1:(WRITE) flags 0x800"
    )
    .unwrap();
    match host.next_interesting() {
        Message::Report(r) => assert_eq!(
            r.snapshot
                .kernel_events
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [3]
        ),
        m => panic!("expected the new event, got {m:?}"),
    }
}

#[test]
fn probe_and_commands_allowed_and_denied() {
    let f = fixture("");
    let marker = f.dir.path().join("fixed");
    let mut text = std::fs::read_to_string(&f.config).unwrap();
    text.push_str(&format!(
        "[[allow]]\naction = \"repair\"\nname = \"fix\"\nargv = [\"/bin/sh\", \"-c\", \"touch {}\"]\n",
        marker.display()
    ));
    std::fs::write(&f.config, text).unwrap();
    let listener = UnixListener::bind(&f.sock).unwrap();
    let _agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);

    host.send(&Message::Probe(Probe { id: 7 }));
    match host.next_interesting() {
        Message::ProbeReply(p) => {
            assert_eq!(p.id, 7);
            assert!(p.snapshot.processes.is_some());
        }
        m => panic!("expected a probe reply, got {m:?}"),
    }

    host.send(&Message::Command(vigil_protocol::Command {
        id: 1,
        action: CommandAction::RestartService("sshd".into()),
    }));
    assert_eq!(
        host.next_interesting(),
        Message::CommandResult(CommandResult {
            id: 1,
            outcome: CommandOutcome::Denied
        })
    );
    host.send(&Message::Command(vigil_protocol::Command {
        id: 2,
        action: CommandAction::Repair("fix; rm -rf /".into()),
    }));
    assert_eq!(
        host.next_interesting(),
        Message::CommandResult(CommandResult {
            id: 2,
            outcome: CommandOutcome::Denied
        })
    );
    host.send(&Message::Command(vigil_protocol::Command {
        id: 3,
        action: CommandAction::Repair("fix".into()),
    }));
    assert_eq!(
        host.next_interesting(),
        Message::CommandResult(CommandResult {
            id: 3,
            outcome: CommandOutcome::Succeeded
        })
    );
    assert!(marker.exists());
}

#[test]
fn sigterm_sends_bye_and_exits_cleanly() {
    let f = fixture("");
    let listener = UnixListener::bind(&f.sock).unwrap();
    let mut agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);
    assert!(matches!(host.next(), Message::Report(_)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        host.next_interesting(),
        Message::Bye(Bye {
            reason: ByeReason::Stopped
        })
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = agent.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// Protocol 2: a host that falls silent (a close the VMM lost, a host that
/// died without a word) is taken for dead after three keepalive intervals
/// (at least 6 s) and the agent reconnects; a host that keeps talking keeps
/// its session.
#[test]
fn a_silent_host_is_taken_for_dead_and_a_talking_one_is_kept() {
    let fx = fixture("");
    let listener = UnixListener::bind(&fx.sock).unwrap();
    let _agent = spawn_agent(&fx.config);
    let (silent, hello) = Host::accept_version(&listener, 200, 2);
    assert_eq!(hello.versions.max, vigil_protocol::PROTOCOL_VERSION);
    let t0 = std::time::Instant::now();
    listener.set_nonblocking(true).unwrap();
    let again = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if t0.elapsed() < Duration::from_secs(15) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("agent did not reconnect: {e}"),
        }
    };
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(10),
        "reconnected after {waited:?}"
    );
    drop((silent, again));
    // The agent backs off a little, then comes again: this host talks.
    let (mut host, _) = Host::accept_version(&listener, 200, 2);
    let t1 = std::time::Instant::now();
    let mut beats = 0;
    while t1.elapsed() < Duration::from_secs(9) {
        host.send(&Message::Keepalive(Keepalive { interval_ms: 1000 }));
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < until {
            if let Message::Heartbeat(_) = host.next() {
                beats += 1;
            }
        }
    }
    assert!(beats >= 20, "only {beats} heartbeats on a kept session");
}

#[test]
fn reconnects_after_the_host_restarts() {
    let f = fixture("");
    let listener = UnixListener::bind(&f.sock).unwrap();
    let _agent = spawn_agent(&f.config);
    let (host, first) = Host::accept(&listener, 200);
    drop(host);
    drop(listener);
    std::fs::remove_file(&f.sock).unwrap();
    std::thread::sleep(Duration::from_millis(700)); // the agent retries against nothing
    let listener = UnixListener::bind(&f.sock).unwrap();
    let t = Instant::now();
    let (mut host, second) = Host::accept(&listener, 200);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "reconnect took {:?}",
        t.elapsed()
    );
    assert_eq!(first.boot_id, second.boot_id);
    assert!(matches!(host.next(), Message::Report(r) if r.trigger == ReportTrigger::Connected));
}

#[test]
fn a_refusing_host_gets_a_clear_error_and_no_flood() {
    let f = fixture("");
    let listener = UnixListener::bind(&f.sock).unwrap();
    let _agent = spawn_agent(&f.config);
    let (stream, _) = listener.accept().unwrap();
    let mut reader = MessageReader::new(stream.try_clone().unwrap(), DEFAULT_MAX_PAYLOAD);
    assert!(matches!(
        reader.read_message().unwrap(),
        Some(Message::Hello(_))
    ));
    let mut w = stream;
    let refused = Refused {
        supported: VersionRange { min: 9, max: 9 },
        reason: "too old".into(),
    };
    write_message(&mut w, &Message::Refused(refused), 1, DEFAULT_MAX_PAYLOAD).unwrap();
    drop(w);
    // The agent backs off to its maximum (300 ms here) instead of hammering.
    listener.set_nonblocking(true).unwrap();
    let t = Instant::now();
    let mut attempts = 0;
    while t.elapsed() < Duration::from_millis(1000) {
        if listener.accept().is_ok() {
            attempts += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        attempts <= 5,
        "{attempts} reconnects within 1 s after a refusal"
    );
}

fn check(config: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil-agent"));
    cmd.args(["check", "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn check_exit_status_follows_the_findings() {
    let f = fixture("[watch]\nprocesses = [\"init-no-such\"]\n");
    // A watched process that does not exist: faulted.
    let (code, out, _) = check(&f.config, false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("service-down"), "{out}");
    // Nothing watched and a clean kernel log: this machine is at worst degraded.
    let g = fixture("");
    let (code, out, _) = check(&g.config, true);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["status"].as_str().unwrap(),
        ["healthy", "degraded", "faulted"][code as usize]
    );
    assert!(v["snapshot"]["processes"]["total"].as_u64().unwrap() > 0);
    // A panic in this boot's kernel log: faulted.
    std::fs::write(
        &g.kmsg,
        "0,5,100,-;Kernel panic - not syncing: Fatal exception\n",
    )
    .unwrap();
    let (code, out, _) = check(&g.config, false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Panic"), "{out}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "conect = \"unix:///x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown field `conect`"), "{err}");
    let missing = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .args(["check", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
}

fn maintenance(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .arg("maintenance")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vigil-agent maintenance on|off|status` from inside the guest reaches
/// the host as notices; a window outlives an agent restart (told again on
/// the new session, with the time left); the APT hook never fails, closes
/// only its own window, and the config can turn it off.
#[test]
fn guest_declared_maintenance_reaches_the_host() {
    let f = fixture("");
    // No agent running: a clear error, except as a hook.
    let (code, _, err) = maintenance(&f.config, &["status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not running"), "{err}");
    // As a hook: silent success (an image built in a chroot runs it).
    let (code, out, err) = maintenance(&f.config, &["on", "--hook", "apt"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let (code, _, err) = maintenance(&f.config, &["on", "--for", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad duration"), "{err}");

    let listener = UnixListener::bind(&f.sock).unwrap();
    let agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);
    assert!(matches!(host.next(), Message::Report(_)));
    let (code, out, err) = maintenance(
        &f.config,
        &["on", "--for", "10m", "--reason", "kernel update"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("maintenance: on") && out.contains("kernel update"),
        "{out}"
    );
    assert!(out.contains("host: connected"), "{out}");
    assert_eq!(
        host.next_interesting(),
        Message::Notice(Notice::MaintenanceStart {
            duration_s: 600,
            reason: "kernel update".into()
        })
    );
    // The APT hook's off leaves the operator's window alone.
    let (code, out, _) = maintenance(&f.config, &["off", "--hook", "apt"]);
    assert_eq!(code, 0);
    assert!(out.contains("left on"), "{out}");
    // The agent restarts mid-window: the new session hears it again.
    drop(agent);
    drop(host);
    let agent = spawn_agent(&f.config);
    let (mut host, _) = Host::accept(&listener, 200);
    match host.next_interesting() {
        Message::Notice(Notice::MaintenanceStart { duration_s, reason }) => {
            assert!((590..=600).contains(&duration_s), "{duration_s}");
            assert_eq!(reason, "kernel update");
        }
        other => panic!("expected the window again, got {other:?}"),
    }
    let (code, out, _) = maintenance(&f.config, &["off"]);
    assert_eq!(code, 0);
    assert!(out.contains("maintenance: off"), "{out}");
    assert_eq!(
        host.next_interesting(),
        Message::Notice(Notice::MaintenanceEnd)
    );
    // The hook opens and closes its own window, with the config's length.
    maintenance(&f.config, &["on", "--hook", "apt"]);
    assert_eq!(
        host.next_interesting(),
        Message::Notice(Notice::MaintenanceStart {
            duration_s: 1800,
            reason: "package upgrade (apt)".into()
        })
    );
    maintenance(&f.config, &["off", "--hook", "apt"]);
    assert_eq!(
        host.next_interesting(),
        Message::Notice(Notice::MaintenanceEnd)
    );
    drop(agent);
    // Turned off in the config: the hook does nothing, successfully.
    let off = f.dir.path().join("off.toml");
    let text = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(&off, format!("{text}[maintenance]\napt_hook = false\n")).unwrap();
    let (code, out, err) = maintenance(&off, &["on", "--hook", "apt"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}
