//! Sessions kept across a vigild restart through the service manager's
//! descriptor store, against a stand-in service manager (this machine's
//! PID 1 is not systemd): the datagram socket of `$NOTIFY_SOCKET` taking
//! `FDSTORE=1` descriptors, and the next vigild started with them as
//! `LISTEN_FDS`/`LISTEN_FDNAMES`, as systemd does.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use common::manager;

use super::*;

#[test]
fn a_restart_hands_sessions_over_and_the_guest_hears_nothing() {
    let mut rig = Rig::with_top("keepalive_interval_ms = 300\n", "");
    let store = under_manager(&mut rig);
    let mut a = FakeAgent::connect(&rig, "db");
    assert!(a.version >= 2, "keepalives need version 2 on");
    let mut seq = 0;
    let mut beat = |a: &mut FakeAgent, n: u64| {
        for _ in 0..n {
            seq += 1;
            a.send(&Message::Heartbeat(Heartbeat {
                seq,
                uptime_ms: 10_000 + seq * 500,
            }));
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    beat(&mut a, 4);
    rig.wait_healthy("db");
    // Half a heartbeat frame on the wire when vigild stops: the next one
    // must go on from there.
    let frame = encode(
        &Message::Heartbeat(Heartbeat {
            seq: 1000,
            uptime_ms: 20_000,
        }),
        a.version,
    )
    .unwrap();
    let (head, tail) = frame.split_at(frame.len() / 2);
    a.stream.write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = rig.vigild.as_ref().unwrap().id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = rig.vigild.take().unwrap().wait().unwrap();
    assert!(status.success(), "vigild exit: {status}\n{}", rig.log());
    assert!(
        rig.log()
            .contains("1 agent sessions handed to the service manager"),
        "{}",
        rig.log()
    );
    let stored = std::mem::take(&mut store.lock().unwrap().fds);
    let names: Vec<String> = stored.iter().map(|(n, _)| n.clone()).collect();
    // The session as it was served (kept since its handshake: "db" in
    // hex), then as handed over, then the state.
    assert!(is_live(&names[0], "db"), "{names:?}");
    assert_eq!(names[1..], ["vigil-s0", "vigil-state"]);
    // The agent heard nothing: no close (the store holds the connection).
    a.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    loop {
        match a.reader.read_message() {
            Ok(Some(Message::Keepalive(_))) => continue, // sent before the stop
            Ok(other) => panic!("the guest heard {other:?} across the restart"),
            Err(_) => break, // timed out: the connection is open and quiet
        }
    }
    // The next vigild, as systemd starts it: the stored descriptors from 3
    // on, named, for its own PID.
    start_with_stored(&mut rig, &stored);
    drop(stored); // the manager's copies go: the next vigild holds them
    a.stream.write_all(tail).unwrap();
    beat(&mut a, 4);
    // Served: the new vigild keeps the session alive, on the same
    // connection, with no new handshake.
    let mut heard = false;
    for _ in 0..30 {
        if let Ok(Some(Message::Keepalive(_))) = a.reader.read_message() {
            heard = true;
            break;
        }
    }
    assert!(heard, "no keepalive from the next vigild\n{}", rig.log());
    let log = rig.log();
    assert!(log.contains("vm=db: agent session taken over"), "{log}");
    assert_eq!(rig.state("db"), "healthy", "{log}");
    let faults: Vec<Value> = rig
        .records()
        .into_iter()
        .filter(|r| r["record"] == "fault")
        .collect();
    assert!(faults.is_empty(), "faults across the restart: {faults:?}");
    // Taken back out of the store: the manager no longer holds them open.
    assert_eq!(store.lock().unwrap().removed, names);
}

/// A live session's name in the store, for `vm`.
fn is_live(name: &str, vm: &str) -> bool {
    let hex: String = vm.bytes().map(|b| format!("{b:02x}")).collect();
    name.starts_with("vigil-o") && name.ends_with(&format!("-{hex}"))
}

/// A stand-in service manager's store, what it was handed so far.
type Stored = std::sync::Arc<std::sync::Mutex<common::Store>>;

/// vigild started again under a stand-in service manager with a
/// descriptor store: the store.
fn under_manager(rig: &mut Rig) -> Stored {
    rig.kill_vigild();
    let notify = rig.path("notify.sock");
    let store = manager(UnixDatagram::bind(&notify).unwrap());
    let env = [
        ("NOTIFY_SOCKET", notify.display().to_string()),
        ("FDSTORE", "16".to_string()),
    ];
    rig.start_vigild_with(&env, None);
    store
}

/// Start vigild as systemd starts it after a stop: the stored descriptors
/// from 3 on, named, for its own PID.
fn start_with_stored(rig: &mut Rig, stored: &[(String, OwnedFd)]) {
    let notify = rig.path("notify.sock");
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    let moves: Vec<String> = stored
        .iter()
        .enumerate()
        .map(|(i, (_, fd))| format!("{}<&{} {}<&-", 3 + i, fd.as_raw_fd(), fd.as_raw_fd()))
        .collect();
    let env = [
        ("NOTIFY_SOCKET", notify.display().to_string()),
        ("FDSTORE", "16".to_string()),
        ("LISTEN_FDS", stored.len().to_string()),
        ("LISTEN_FDNAMES", names.join(":")),
    ];
    let script = format!("export LISTEN_PID=$$; exec \"$@\" {}", moves.join(" "));
    rig.start_vigild_with(&env, Some(&script));
}

/// vigild killed (SIGKILL, a crash): it hands nothing over, but the store
/// holds every served session, so nothing is closed under the guest (a
/// close reaching a paused VM's vsock breaks it). The next vigild cannot
/// serve them on (where the stream stood is unknown); it closes each once
/// its guest runs, and the agent reconnects.
#[test]
fn a_killed_vigild_closes_nothing_and_the_next_one_closes_what_it_left() {
    let mut rig = Rig::new("");
    let store = under_manager(&mut rig);
    let mut a = FakeAgent::connect(&rig, "db");
    for seq in 1..=3 {
        a.send(&Message::Heartbeat(Heartbeat {
            seq,
            uptime_ms: 10_000 + seq * 500,
        }));
        std::thread::sleep(Duration::from_millis(500));
    }
    rig.wait_healthy("db");
    let names: Vec<String> = store
        .lock()
        .unwrap()
        .fds
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert!(names.len() == 1 && is_live(&names[0], "db"), "{names:?}");
    rig.kill_vigild(); // SIGKILL
                       // The agent hears nothing: the store holds its connection.
    a.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    loop {
        match a.reader.read_message() {
            Ok(Some(Message::Keepalive(_))) => continue, // sent before the kill
            Ok(other) => panic!("the guest heard {other:?} when vigild was killed"),
            Err(_) => break, // timed out: open and quiet
        }
    }
    let stored = std::mem::take(&mut store.lock().unwrap().fds);
    start_with_stored(&mut rig, &stored);
    drop(stored);
    // Its domain runs: the next vigild closes the connection; the agent
    // hears the end (and would reconnect).
    a.stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    loop {
        match a.reader.read_message() {
            Ok(Some(Message::Keepalive(_))) => continue,
            Ok(None) => break,
            other => panic!(
                "expected the connection's end, got {other:?}\n{}",
                rig.log()
            ),
        }
    }
    wait_until(Duration::from_secs(5), "the close logged", || {
        rig.log()
            .contains("vm=db: the agent connection a killed vigild left is closed")
    });
    assert!(store.lock().unwrap().removed.contains(&names[0]));
    // The agent reconnects and is served.
    let mut b = FakeAgent::connect(&rig, "db");
    for seq in 1..=3 {
        b.send(&Message::Heartbeat(Heartbeat {
            seq,
            uptime_ms: 20_000 + seq * 500,
        }));
        std::thread::sleep(Duration::from_millis(500));
    }
    rig.wait_healthy("db");
}
