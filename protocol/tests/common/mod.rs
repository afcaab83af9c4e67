//! Canonical sample messages, shared by the golden-vector tests and the benchmark.

#![allow(dead_code)]

use vigil_protocol::snapshot::*;
use vigil_protocol::*;

/// A realistic report: 40 watched services, 10 filesystems, 20 kernel events.
pub fn realistic_report() -> Report {
    let watched = (0..40)
        .map(|i| WatchedService {
            target: if i % 2 == 0 {
                WatchTarget::Process(format!("worker-{i}").into())
            } else {
                WatchTarget::Unit(format!("app-{i}.service").into())
            },
            running: i % 7 != 0,
            pid: (i % 7 != 0).then_some(1000 + i),
            restarts: i % 3,
        })
        .collect();
    let filesystems = (0..10)
        .map(|i| Filesystem {
            mount_point: if i == 0 {
                "/".into()
            } else {
                format!("/srv/data{i}").into()
            },
            device: format!("/dev/vd{}", (b'a' + i as u8) as char).into(),
            fs_type: "ext4".into(),
            size_bytes: 20 << 30,
            avail_bytes: (20 << 30) / (i + 2),
            inodes_total: 1_310_720,
            inodes_free: 1_000_000 - i * 1000,
            read_only: i == 9,
        })
        .collect();
    let kernel_events = (0..20)
        .map(|i| KernelEvent {
            kind: if i % 2 == 0 {
                KernelEventKind::IoError
            } else {
                KernelEventKind::HungTask
            },
            seq: 4000 + i,
            timestamp_us: 12_345_678 + i * 1000,
            subject: Some("vdb".into()),
            text: format!(
                "I/O error, dev vdb, sector {} op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2",
                2048 + i
            )
            .into(),
        })
        .collect();
    Report {
        seq: 42,
        trigger: ReportTrigger::KernelEvent,
        snapshot: Snapshot {
            uptime_ms: 3_600_000,
            wall_ms: 1_795_000_000_000,
            processes: Some(ProcessSummary {
                total: 143,
                zombies: 1,
                uninterruptible: 2,
            }),
            watched,
            filesystems,
            memory: Some(Memory {
                total_bytes: 2 << 30,
                available_bytes: 700 << 20,
                swap_total_bytes: 1 << 30,
                swap_free_bytes: 900 << 20,
                oom_kills: Some(0),
            }),
            pressure: Some(Pressure {
                cpu: Some(PsiResource {
                    some: PsiLine {
                        avg10: 1234,
                        avg60: 800,
                        total_us: 99_000_000,
                    },
                    full: None,
                }),
                memory: Some(PsiResource {
                    some: PsiLine {
                        avg10: 10,
                        avg60: 5,
                        total_us: 1_000,
                    },
                    full: Some(PsiLine {
                        avg10: 0,
                        avg60: 0,
                        total_us: 100,
                    }),
                }),
                io: None,
            }),
            cpu: Some(Cpu {
                load1: 123,
                load5: 98,
                load15: 50,
                cpus: 2,
                busy: 4500,
                iowait: 300,
                steal: 12,
            }),
            kernel_events,
            kernel_counters: KernelCounters {
                events: 20,
                segfaults: 3,
                dropped: 0,
                overwritten: 0,
            },
            crash_record: Some(CrashRecord {
                source: "dmesg-ramoops-0".into(),
                text: "Kernel panic - not syncing: sysrq triggered crash".into(),
            }),
            failures: vec![CollectorFailure {
                collector: "pressure".into(),
                error: "no /proc/pressure/io".into(),
            }],
            network: Some(sample_network()),
        },
    }
}

/// A guest with one interface, both default routes, its gateway resolved
/// and one TCP check failing.
pub fn sample_network() -> Network {
    Network {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac: "52:54:00:12:34:56".into(),
            up: true,
            carrier: true,
            operstate: "up".into(),
            mtu: 1500,
            addresses: vec!["10.0.2.15/24".into(), "fec0::5054:ff:fe12:3456/64".into()],
            counters: NetCounters {
                rx_packets: 1200,
                tx_packets: 900,
                rx_errors: 0,
                tx_errors: 0,
                rx_dropped: 3,
                tx_dropped: 0,
            },
        }],
        default_v4: Some(Route {
            interface: "eth0".into(),
            gateway: Some("10.0.2.2".into()),
        }),
        default_v6: Some(Route {
            interface: "eth0".into(),
            gateway: Some("fe80::2".into()),
        }),
        gateway: Some(Neighbour {
            address: "10.0.2.2".into(),
            interface: "eth0".into(),
            state: NeighbourState::Resolved,
        }),
        tcp: vec![TcpCheck {
            target: "10.0.2.2:8080".into(),
            ok: false,
            latency_ms: 2000,
            failures: 3,
            error: Some("connection refused".into()),
        }],
    }
}

/// `msg` as a session older than version 3 carries it: no network.
pub fn without_network(msg: &Message) -> Message {
    let mut m = msg.clone();
    match &mut m {
        Message::Report(r) => r.snapshot.network = None,
        Message::ProbeReply(r) => r.snapshot.network = None,
        _ => {}
    }
    m
}

/// A small snapshot for probe replies.
pub fn small_snapshot() -> Snapshot {
    Snapshot {
        uptime_ms: 5000,
        wall_ms: 1_795_000_000_000,
        processes: Some(ProcessSummary {
            total: 12,
            zombies: 0,
            uninterruptible: 0,
        }),
        watched: vec![WatchedService {
            target: WatchTarget::Process("testsvc".into()),
            running: true,
            pid: Some(77),
            restarts: 0,
        }],
        ..Snapshot::default()
    }
}

/// One canonical sample of every message kind, in kind order.
pub fn one_of_each() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            versions: VersionRange { min: 1, max: 1 },
            agent_version: "0.1.0".into(),
            boot_id: "5c1f0a4e-8a57-4a1e-9d55-0c8c2b7d3f10".into(),
            hostname: "vm1".into(),
            kernel_release: "6.1.0-37-cloud-amd64".into(),
            capabilities: vec![
                Capability::Probe,
                Capability::Commands,
                Capability::KernelLog,
            ],
        }),
        Message::Welcome(Welcome {
            version: 1,
            settings: Settings::default(),
        }),
        Message::Refused(Refused {
            supported: VersionRange { min: 1, max: 1 },
            reason: "no common protocol version".into(),
        }),
        Message::Heartbeat(Heartbeat {
            seq: 1234,
            uptime_ms: 617_000,
        }),
        Message::Report(realistic_report()),
        Message::Probe(Probe { id: 7 }),
        Message::ProbeReply(ProbeReply {
            id: 7,
            snapshot: small_snapshot(),
        }),
        Message::Command(Command {
            id: 9,
            action: CommandAction::RestartService("testsvc".into()),
        }),
        Message::CommandResult(CommandResult {
            id: 9,
            outcome: CommandOutcome::Failed {
                exit_code: Some(1),
                detail: "unit not found".into(),
            },
        }),
        Message::Notice(Notice::MaintenanceStart {
            duration_s: 600,
            reason: "apt upgrade".into(),
        }),
        Message::Bye(Bye {
            reason: ByeReason::Shutdown,
        }),
        Message::Config(Config {
            settings: Settings {
                heartbeat_interval_ms: 250,
                ..Settings::default()
            },
        }),
        Message::Keepalive(Keepalive { interval_ms: 2000 }),
    ]
}
