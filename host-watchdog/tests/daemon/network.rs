//! The guest's network through vigild: a version-3 agent's report carries
//! it, `vigilctl status` shows each interface with the host's side of it
//! (the test driver's vNICs, read from libvirt), `/metrics` has a series
//! per interface, and an interface that worked going down inside the
//! guest (the host's side up) is network-down after the hold-off.

use super::*;
use vigil_protocol::snapshot::{Interface, Network, Route};

fn report(seq: u64, up: bool) -> Message {
    Message::Report(Report {
        seq,
        trigger: ReportTrigger::Periodic,
        snapshot: Snapshot {
            uptime_ms: seq * 500,
            network: Some(Network {
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    mac: "52:54:00:00:00:99".into(),
                    up,
                    carrier: up,
                    operstate: if up { "up" } else { "down" }.into(),
                    mtu: 1500,
                    addresses: vec!["10.0.2.15/24".into()],
                    ..Interface::default()
                }],
                default_v4: Some(Route {
                    interface: "eth0".into(),
                    gateway: Some("10.0.2.2".into()),
                }),
                ..Network::default()
            }),
            ..Snapshot::default()
        },
    })
}

#[test]
fn the_guests_network_is_shown_measured_and_judged() {
    let rig = Rig::new("");
    let mut a = FakeAgent::connect(&rig, "web");
    assert!(a.version >= 3, "version {}", a.version);
    let mut seq = 0;
    let mut beat = |a: &mut FakeAgent, n: u32, report_up: Option<bool>| {
        for i in 0..n {
            seq += 1;
            a.send(&Message::Heartbeat(Heartbeat {
                seq,
                uptime_ms: seq * 500,
            }));
            if let (0, Some(up)) = (i % 4, report_up) {
                a.send(&report(seq, up));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    beat(&mut a, 4, Some(true));
    rig.wait_healthy("web");
    let out = rig.ctl(&["status", "web"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("interface:     eth0 52:54:00:00:00:99 up 10.0.2.15/24"),
        "{text}"
    );
    // The test driver's vNIC of web (its MAC is libvirt's), read from
    // libvirt because the guest's network changed shape.
    assert!(
        text.lines()
            .any(|l| l.starts_with("vnic:") && l.contains("link up")),
        "{text}"
    );
    assert!(
        text.contains("routes:        v4 via 10.0.2.2 on eth0"),
        "{text}"
    );
    let metrics = rig.scrape();
    assert!(
        metrics.contains("vigil_guest_net_up{domain=\"web\"")
            && metrics.contains("interface=\"eth0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_vnic_link_up{domain=\"web\""),
        "{metrics}"
    );

    // eth0 set down inside the guest: after the 5 s hold-off, network-down
    // in the guest's network, and its restart-network asked of the agent.
    beat(&mut a, 16, Some(false));
    let f = rig.find("fault", "web", |r| r["kind"] == "network-down");
    assert_eq!(f.len(), 1, "{:?}\n{}", rig.records(), rig.log());
    assert_eq!(f[0]["layer"], "guest-network");
    assert_eq!(f[0]["subject"], "eth0");
    let intents = rig.intents("web");
    assert!(
        intents.iter().any(|i| i.contains("restart-network")),
        "{intents:?}"
    );
}
