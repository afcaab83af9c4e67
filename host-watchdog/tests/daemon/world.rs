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
    let toml = std::fs::read_to_string(rig.path("vigild.toml")).unwrap();
    std::fs::write(
        rig.path("vigild.toml"),
        toml.replacen(&format!("metrics_listen = \"127.0.0.1:{port}\"\n"), "", 1),
    )
    .unwrap();
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
fn control_group_members_read_and_only_root_changes() {
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
