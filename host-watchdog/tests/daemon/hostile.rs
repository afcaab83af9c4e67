//! Hostile guests: oversized, garbage, flooding and silent clients.

use super::*;

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
                a.version,
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
