//! Helpers shared by the daemon and real-VM tests: drive `vigilctl` and read
//! vigild's journal through it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::Value;

/// Run vigilctl against `socket`.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// Run vigilctl with `--json`; panic on failure.
pub fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ctl(socket, &a);
    assert!(
        out.status.success(),
        "vigilctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every journal record, in order.
pub fn records(socket: &Path) -> Vec<(u64, Value)> {
    let out = ctl(socket, &["events", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["t"].as_u64().unwrap_or(0), v["record"].clone())
        })
        .collect()
}

/// Records of `kind` about `vm` that satisfy `pred`.
pub fn find(socket: &Path, kind: &str, vm: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    records(socket)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r["record"] == kind && r["vm"] == vm && pred(r))
        .collect()
}

/// Wait for a record; on timeout, panic with the journal and `log`.
pub fn wait_record(
    socket: &Path,
    secs: u64,
    what: &str,
    kind: &str,
    vm: &str,
    pred: impl Fn(&Value) -> bool,
    log: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(r) = find(socket, kind, vm, &pred).into_iter().next() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; journal:\n{:#?}\nlog:\n{}",
            records(socket)
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll until `f` holds.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a stand-in service manager (vigild's `$NOTIFY_SOCKET`) heard: stored descriptors by name,
/// and the names it was asked to remove.
#[derive(Default)]
pub struct Store {
    pub fds: Vec<(String, OwnedFd)>,
    pub removed: Vec<String>,
}

/// The stand-in service manager: reads every notification (systemd does;
/// an unread datagram queue would block vigild's notifications).
pub fn manager(sock: UnixDatagram) -> Arc<Mutex<Store>> {
    let store = Arc::new(Mutex::new(Store::default()));
    let s = store.clone();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || loop {
        if Arc::strong_count(&s) == 1 {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 16]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            continue;
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: received with SCM_RIGHTS: new descriptors, ours.
                fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::to_string)
        };
        let name = field("FDNAME=").unwrap_or_default();
        let mut st = s.lock().unwrap();
        if field("FDSTORE=").as_deref() == Some("1") {
            st.fds.extend(fds.into_iter().map(|fd| (name.clone(), fd)));
        }
        if field("FDSTOREREMOVE=").as_deref() == Some("1") {
            st.fds.retain(|(n, _)| *n != name);
            st.removed.push(name);
        }
    });
    store
}
