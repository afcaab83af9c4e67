//! vigild's own world: config reloads, control access, the journal's disk.

use super::*;

fn config(rig: &Rig) -> Value {
    rig.ctl_json(&["config"])
}

#[test]
fn reload_applies_what_it_can_and_a_bad_file_changes_nothing() {
    let mut rig = Rig::new("");
    let port = rig.metrics_port;
    let before = config(&rig);
    assert_ne!(before["engine"]["heartbeat_timeout_ms"], 9_000);
    // An engine setting applies at once; the metrics address takes a
    // restart and keeps its running value.
    rig.extra = "[engine]\nheartbeat_timeout_ms = 9000\n".into();
    rig.top = "metrics_listen = \"127.0.0.1:1\"\n".into();
    rig.write_config();
    let r = rig.ctl_json(&["reload"]);
    assert_eq!(r["applied"], serde_json::json!(["engine"]), "{r}");
    assert_eq!(
        r["needs_restart"],
        serde_json::json!(["metrics_listen"]),
        "{r}"
    );
    let text = String::from_utf8(rig.ctl(&["reload"]).stdout).unwrap();
    assert!(
        text.contains("kept until vigild restarts: metrics_listen"),
        "{text}"
    );
    let now = config(&rig);
    assert_eq!(now["engine"]["heartbeat_timeout_ms"], 9_000);
    assert_eq!(now["metrics_listen"], format!("127.0.0.1:{port}"));
    // A bad file: its error, exit 2, and nothing changes.
    std::fs::write(rig.path("vigild.toml"), "colour = 1\n").unwrap();
    let out = rig.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `colour`") && err.contains("the running config stays"),
        "{err}"
    );
    assert_eq!(config(&rig), now);
    // SIGHUP: the same, from the signal (a bad file, then a good one).
    let pid = nix::unistd::Pid::from_raw(rig.vigild.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGHUP).unwrap();
    wait_until(Duration::from_secs(5), "rejected reload logged", || {
        rig.log().contains("config not reloaded")
    });
    assert_eq!(config(&rig), now);
    rig.extra = "[engine]\nheartbeat_timeout_ms = 8000\n".into();
    rig.top = String::new();
    rig.write_config();
    nix::sys::signal::kill(pid, nix::sys::signal::SIGHUP).unwrap();
    wait_until(Duration::from_secs(5), "SIGHUP reload", || {
        config(&rig)["engine"]["heartbeat_timeout_ms"] == 8_000
    });
    let m = rig.scrape();
    assert!(
        m.contains("vigil_config_reloads_total{result=\"rejected\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("vigil_config_reloads_total{result=\"ok\"} 3"),
        "{m}"
    );
    // vigild still works.
    rig.start_agent("web", None);
    rig.wait_healthy("web");
}

/// Users and a group made for a test, removed when it ends.
struct Users {
    users: Vec<&'static str>,
    group: &'static str,
}

impl Users {
    fn make(group: &'static str, member: &'static str, other: &'static str) -> Users {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test makes users: run it as root (scripts/test.sh does)"
        );
        let made = Users {
            users: vec![member, other],
            group,
        };
        made.remove(); // what a killed run left
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(Command::new("groupadd").arg(group));
        let user = |name: &str, extra: &[&str]| {
            ok(Command::new("useradd")
                .args(["-M", "-N", "-g", "users", "-s", "/usr/sbin/nologin"])
                .args(extra)
                .arg(name))
        };
        user(member, &["-G", group]);
        user(other, &[]);
        made
    }

    fn remove(&self) {
        for u in &self.users {
            let _ = Command::new("userdel")
                .arg(u)
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("groupdel")
            .arg(self.group)
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.remove();
    }
}

/// vigilctl as `user` (its groups from the user database).
fn ctl_as(rig: &Rig, user: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", user, "--regid", "users", "--init-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_vigilctl"))
        .arg("--socket")
        .arg(rig.path("control.sock"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root: makes users and a group"]
fn root_control_group_members_read_and_only_root_changes() {
    let _users = Users::make("vigiltest-ro", "vigiltest-ro", "vigiltest-no");
    let mut rig = Rig::with_top("control_group = \"vigiltest-ro\"\n", "");
    // The rig's directory is the socket's parent: others may pass through.
    std::fs::set_permissions(
        rig.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let meta = std::fs::metadata(rig.path("control.sock")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = nix::unistd::Group::from_name("vigiltest-ro")
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(meta.gid(), gid.as_raw());
    rig.start_agent("web", None);
    rig.wait_healthy("web");
    // A member reads.
    for args in [
        &["list"][..],
        &["status", "web"],
        &["events"],
        &["report"],
        &["health", "web"],
        &["probe", "web"],
        &["warnings"],
        &["config"],
        &["host"],
    ] {
        let out = ctl_as(&rig, "vigiltest-ro", args);
        assert!(
            out.status.success(),
            "member: vigilctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ... and changes nothing: exit 77, said why, and the state is as it was.
    for args in [
        &["disarm"][..],
        &["maintenance", "web", "on"],
        &["action", "web", "reset"],
        &["reload"],
        &["host", "--clear"],
        &["release", "web"],
    ] {
        let out = ctl_as(&rig, "vigiltest-ro", args);
        assert_eq!(out.status.code(), Some(77), "member: vigilctl {args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("permission denied") && e.contains("root's"),
            "{e}"
        );
    }
    assert_eq!(rig.ctl_json(&["list"])["armed"], true);
    assert_eq!(rig.state("web"), "healthy");
    assert!(rig.intents("web").is_empty(), "{:?}", rig.intents("web"));
    assert!(rig.log().contains("control: uid"), "denials are logged");
    // Someone else may not even connect.
    let out = ctl_as(&rig, "vigiltest-no", &["list"]);
    assert_eq!(out.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&out.stderr).contains("control_group"));
    // Root changes things.
    assert_eq!(rig.ctl_json(&["disarm"])["armed"], false);
    assert_eq!(rig.ctl_json(&["arm"])["armed"], true);
}

#[test]
fn a_damaged_journal_is_moved_aside_at_start_and_a_fresh_one_begun() {
    let mut rig = Rig::new("");
    rig.start_agent("web", None);
    rig.wait_healthy("web");
    rig.kill_vigild();
    // The header overwritten (and the write-ahead log, which holds the
    // newest copy of it, lost): not a database any more.
    let path = rig.path("journal.db");
    for f in ["journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(rig.path(f));
    }
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..100].fill(0x5a);
    std::fs::write(&path, &bytes).unwrap();
    let check = |p: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_vigild"))
            .arg("--check-journal")
            .arg(p)
            .output()
            .unwrap()
    };
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED"));
    rig.start_vigild();
    rig.wait_healthy("web");
    let aside: Vec<_> = std::fs::read_dir(rig.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("journal.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap()[..100],
        bytes[..100],
        "kept as it was"
    );
    assert!(rig.log().contains("is damaged"), "{}", rig.log());
    let st = String::from_utf8(rig.ctl(&["status", "web"]).stdout).unwrap();
    assert!(st.contains("moved aside to"), "{st}");
    // The fresh journal takes records and checks out.
    assert!(!rig.find("transition", "web", |_| true).is_empty());
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sound"));
    assert_eq!(check(&aside[0]).status.code(), Some(1));
}

/// A tmpfs mounted for a test, unmounted when it ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: std::path::PathBuf, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs: run it as root (scripts/test.sh does)"
        );
        std::fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "vigil-test"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(at)
    }

    fn remount(&self, opt: &str) {
        // (refused while a file on it is open for writing)
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn journal_state(rig: &Rig) -> Value {
    rig.ctl_json(&["list"])["watchdog"]["journal"].clone()
}

/// The journal's disk full: vigild watches on and says so, takes no action
/// whose intent it cannot make durable, and once the disk has room again
/// the records are written and the action runs. (A journal going
/// read-only under a running vigild, the kernel's `errors=remount-ro`, is
/// the same failed write; `mount -o remount,ro` itself is refused while
/// the file is open for writing.)
#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn root_journal_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(dir.path().join("j"), "8m");
    let journal = fs.0.join("journal.db");
    let mut rig = Rig::with_top(&format!("journal = \"{}\"\n", journal.display()), "");
    rig.start_service();
    let cmd = restart_cmd(&rig);
    rig.start_agent("web", Some(&cmd));
    rig.wait_healthy("web");
    for round in 1..=2 {
        // Every block taken.
        let filler = fs.0.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(Stdio::null())
            .status();
        // A repair is a closed record; a second kill within the flap
        // window reopens the same fault, so count them, not their ids.
        let repairs = || {
            rig.find("closed", "web", |r| {
                r["kind"] == "service-down" && r["how"] == "recovered"
            })
        };
        let before = repairs().len();
        let t0 = std::time::Instant::now();
        rig.kill_service();
        wait_until(
            Duration::from_secs(15),
            "the journal refusing writes",
            || journal_state(&rig)["ok"] == false,
        );
        wait_until(Duration::from_secs(15), "an action held", || {
            journal_state(&rig)["actions_held"].as_u64() >= Some(1)
        });
        let j = journal_state(&rig);
        eprintln!("journal full (round {round}): {j}");
        assert!(j["error"].as_str().unwrap().contains("full"), "{j}");
        assert!(
            rig.service_pid().is_none(),
            "acted without a durable intent"
        );
        wait_until(Duration::from_secs(5), "the metrics to say so", || {
            let m = rig.scrape();
            m.contains("vigil_journal_writable 0") && m.contains("vigil_actions_held 1")
        });
        let text = String::from_utf8(rig.ctl(&["list"]).stdout).unwrap();
        assert!(text.contains("JOURNAL:       refusing writes"), "{text}");
        // vigild still answers and watches.
        assert_eq!(rig.ctl_json(&["status", "web"])["agent_connected"], true);
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            rig.service_pid().is_none(),
            "acted without a durable intent"
        );
        std::fs::remove_file(&filler).unwrap();
        wait_until(
            Duration::from_secs(15),
            "the journal writable again",
            || journal_state(&rig)["ok"] == true,
        );
        rig.wait_for(20, "this round's repair", || repairs().len() > before);
        let closed = repairs().pop().unwrap();
        wait_until(Duration::from_secs(5), "the service restarted", || {
            rig.service_pid().is_some()
        });
        let pid = rig.service_pid().unwrap();
        rig.services.push(pid);
        eprintln!(
            "journal full (round {round}): the repair ran once the journal took writes ({:?} after the fault, repair {} ms)",
            t0.elapsed(),
            closed["repair_ms"]
        );
        rig.wait_healthy("web");
        // Each fault's intent is in the journal once.
        assert_eq!(rig.intents("web").len(), round, "{:?}", rig.intents("web"));
    }
    assert!(rig.scrape().contains("vigil_journal_writable 1"));
    // A journal read-only before vigild starts: vigild cannot know what a
    // previous run left unfinished (an intent without its outcome, the
    // destructive budget), so it does not start blind; it says why.
    rig.kill_vigild();
    fs.remount("ro");
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .arg("--config")
        .arg(rig.path("vigild.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot open journal"), "{e}");
    fs.remount("rw");
    rig.start_vigild();
    rig.wait_healthy("web");
}
