//! Sessions kept across a vigild restart through the service manager's
//! descriptor store, against a stand-in service manager (this machine's
//! PID 1 is not systemd): the datagram socket of `$NOTIFY_SOCKET` taking
//! `FDSTORE=1` descriptors, and the next vigild started with them as
//! `LISTEN_FDS`/`LISTEN_FDNAMES`, as systemd does.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use common::manager;

use super::*;

#[test]
fn a_restart_hands_sessions_over_and_the_guest_hears_nothing() {
    let mut rig = Rig::with_top("keepalive_interval_ms = 300\n", "");
    rig.kill_vigild();
    let notify = rig.path("notify.sock");
    let store = manager(UnixDatagram::bind(&notify).unwrap());
    let env = [
        ("NOTIFY_SOCKET", notify.display().to_string()),
        ("FDSTORE", "16".to_string()),
    ];
    rig.start_vigild_with(&env, None);
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
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["vigil-s0", "vigil-state"]);
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
    let (s0, st) = (stored[0].1.as_raw_fd(), stored[1].1.as_raw_fd());
    let env = [
        ("NOTIFY_SOCKET", notify.display().to_string()),
        ("FDSTORE", "16".to_string()),
        ("LISTEN_FDS", "2".to_string()),
        ("LISTEN_FDNAMES", "vigil-s0:vigil-state".to_string()),
    ];
    let script = format!("export LISTEN_PID=$$; exec \"$@\" 3<&{s0} 4<&{st} {s0}<&- {st}<&-");
    rig.start_vigild_with(&env, Some(&script));
    drop(stored); // the manager's copies go: the next vigild holds them
    a.stream.write_all(tail).unwrap();
    beat(&mut a, 4);
    // Served: the new vigild keeps the session alive, on the same
    // connection, with no new handshake.
    let mut heard = false;
    for _ in 0..10 {
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
    assert_eq!(store.lock().unwrap().removed, ["vigil-s0", "vigil-state"]);
}
