//! Feeds arbitrary bytes to the control socket's request parser (one JSON
//! line, as vigild reads it). Must never panic; a request that parses
//! must re-serialize to one that parses the same, and its access check
//! must decide for any peer without panicking.
//! Run: `cd host-watchdog/fuzz && cargo +nightly fuzz run control_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_watchdog::daemon::control::{Access, Peer, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = serde_json::from_str::<Request>(line) else {
        return;
    };
    let text = serde_json::to_string(&req).expect("serializes");
    let again: Request = serde_json::from_str(&text).expect("re-parses");
    assert_eq!(again, req);
    let uid = data.first().copied().unwrap_or(0) as u32 % 3;
    let peer = Peer {
        uid: uid * 1000,
        gid: 500,
        pid: None,
    };
    let access = Access {
        group: Some(500),
        owner: 0,
    };
    let decided = access.check(peer, &[], &req);
    // Root may do everything; the group only what reads.
    assert_eq!(decided.is_ok(), uid == 0 || req.read_only());
    assert!(!req.verb().is_empty());
});
