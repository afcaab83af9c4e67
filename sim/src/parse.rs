//! The scenario text format (see the parent module's documentation) into a
//! [`Scenario`].

use super::*;

fn num(s: &str, what: &str) -> Result<u64, String> {
    s.trim_start_matches('+')
        .parse()
        .map_err(|_| format!("bad {what} {s:?}"))
}

fn probe_result(s: &str) -> Result<ProbeResult, String> {
    Ok(match s {
        "refused" => ProbeResult::Refused,
        "accepted" => ProbeResult::Accepted,
        "timed-out" => ProbeResult::TimedOut,
        "unsupported" => ProbeResult::Unsupported,
        _ => return Err(format!("bad probe result {s:?}")),
    })
}

fn domain_state(s: &str) -> Result<DomainState, String> {
    let (a, b) = s.split_once(':').unwrap_or((s, ""));
    Ok(match (a, b) {
        ("running", "") => DomainState::Running,
        ("crashed", "") => DomainState::Crashed { panicked: false },
        ("crashed", "panicked") => DomainState::Crashed { panicked: true },
        ("paused", r) => DomainState::Paused(match r {
            "user" => PauseReason::User,
            "migration" => PauseReason::Migration,
            "save" => PauseReason::Save,
            "snapshot" => PauseReason::Snapshot,
            "io-error" => PauseReason::IoError,
            "no-space" => PauseReason::NoSpace,
            "watchdog" => PauseReason::Watchdog,
            "panicked" => PauseReason::Panicked,
            "" | "other" => PauseReason::Other,
            _ => return Err(format!("bad pause reason {r:?}")),
        }),
        ("shutoff", r) => DomainState::ShutOff(match r {
            "shutdown" => StopReason::Shutdown,
            "destroyed" => StopReason::Destroyed,
            "crashed" => StopReason::Crashed,
            "migrated" => StopReason::Migrated,
            "saved" => StopReason::Saved,
            "failed" => StopReason::Failed,
            "" | "other" => StopReason::Other,
            _ => return Err(format!("bad stop reason {r:?}")),
        }),
        _ => return Err(format!("bad domain state {s:?}")),
    })
}

/// `MOUNT size=MIB avail=MIB [inodes=N free-inodes=N] [vms=A,B] [dev=D,E]`.
fn host_fs(words: &[&str]) -> Result<Event, String> {
    const MIB: u64 = 1 << 20;
    let mount = words.first().ok_or("host fs MOUNT ...")?;
    let mut fs = storage::FsSample {
        mount: mount.to_string(),
        size: 0,
        avail: 0,
        inodes: 0,
        inodes_avail: 0,
        vms: Vec::new(),
        journal: false,
    };
    let mut devs = Vec::new();
    let list = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
    for a in &words[1..] {
        let (k, v) = a
            .split_once('=')
            .ok_or(format!("bad host fs field {a:?}"))?;
        match k {
            "size" => fs.size = num(v, k)? * MIB,
            "avail" => fs.avail = num(v, k)? * MIB,
            "inodes" => fs.inodes = num(v, k)?,
            "free-inodes" => fs.inodes_avail = num(v, k)?,
            "vms" => fs.vms = list(v),
            "dev" => devs = list(v),
            _ => return Err(format!("unknown host fs field {k:?}")),
        }
    }
    if fs.size == 0 || fs.avail > fs.size {
        return Err("host fs needs size=MIB > 0 and avail=MIB <= size".into());
    }
    Ok(Event::HostFs(fs, devs))
}

fn kernel_kind(s: &str) -> Result<KernelEventKind, String> {
    Ok(match s {
        "panic" => KernelEventKind::Panic,
        "oops" => KernelEventKind::Oops,
        "hung-task" => KernelEventKind::HungTask,
        "soft-lockup" => KernelEventKind::SoftLockup,
        "rcu-stall" => KernelEventKind::RcuStall,
        "oom" => KernelEventKind::OomKill,
        "io-error" => KernelEventKind::IoError,
        "fs-error" => KernelEventKind::FsError,
        "remount-ro" => KernelEventKind::RemountReadOnly,
        "mce" => KernelEventKind::MachineCheck,
        _ => return Err(format!("bad kernel event {s:?}")),
    })
}

/// A 100 MiB ext4 filesystem of 1,000 inodes with `used` % of its blocks
/// and `inodes_used` % of its inodes taken.
fn filesystem(mount: &str, used: u64, inodes_used: u64, read_only: bool) -> Filesystem {
    Filesystem {
        mount_point: mount.into(),
        device: "/dev/vda".into(),
        fs_type: "ext4".into(),
        size_bytes: 100 << 20,
        avail_bytes: (100 - used) << 20,
        inodes_total: 1000,
        inodes_free: (100 - inodes_used) * 10,
        read_only,
    }
}

fn report(args: &[&str]) -> Result<Snapshot, String> {
    let mut s = Snapshot::default();
    for a in args {
        let (k, v) = a.split_once('=').ok_or(format!("bad report field {a:?}"))?;
        match k {
            "service" => {
                let (name, st) = v.split_once(':').ok_or(format!("bad service {v:?}"))?;
                let running = match st {
                    "up" => true,
                    "down" => false,
                    _ => return Err(format!("bad service state {st:?}")),
                };
                s.watched.push(WatchedService {
                    target: WatchTarget::Process(name.into()),
                    running,
                    pid: running.then_some(100),
                    restarts: 0,
                });
            }
            "disk" => {
                let (mount, pct) = v.split_once(':').ok_or(format!("bad disk {v:?}"))?;
                let pct = num(pct, "percent")?.min(100);
                s.filesystems.push(filesystem(mount, pct, 10, false));
            }
            "inodes" => {
                // inodes=MOUNT:PCT: half full by bytes, PCT % of inodes used.
                let (mount, pct) = v.split_once(':').ok_or(format!("bad inodes {v:?}"))?;
                let pct = num(pct, "percent")?.min(100);
                s.filesystems.push(filesystem(mount, 50, pct, false));
            }
            "ro" => s.filesystems.push(filesystem(v, 50, 10, true)),
            "kernel" => {
                // kernel=KIND[@-MS]: the line was logged MS before the report.
                let (v, ago) = match v.split_once("@-") {
                    Some((k, ms)) => (k, num(ms, "age")?),
                    None => (v, 0),
                };
                let kind = kernel_kind(v)?;
                s.kernel_events.push(KernelEvent {
                    kind,
                    seq: s.kernel_events.len() as u64 + 1,
                    timestamp_us: ago, // made absolute when the report is fed
                    subject: Some("vda".into()),
                    text: format!("simulated {v}").into(),
                });
            }
            "blocked" => {
                s.processes = Some(ProcessSummary {
                    total: 50,
                    zombies: 0,
                    uninterruptible: num(v, "blocked tasks")? as u32,
                });
            }
            "psi" => {
                // psi=PCT[/STALL_MS]: avg10, and the stall counter (ms).
                let (pct, stall) = v.split_once('/').unwrap_or((v, "0"));
                let x = (pct.parse::<f64>().map_err(|_| format!("bad psi {v:?}"))? * 100.0).round()
                    as u32;
                let line = PsiLine {
                    avg10: x,
                    avg60: x,
                    total_us: num(stall, "psi stall ms")? * 1000,
                };
                s.pressure = Some(Pressure {
                    memory: Some(PsiResource {
                        some: line,
                        full: None,
                    }),
                    ..Pressure::default()
                });
            }
            "net" => {
                // net=IF:up|down|nocarrier|noaddr (MAC 52:54:00:00:00:0N for
                // the Nth interface, address 10.0.2.15/24 unless noaddr).
                let (name, st) = v.split_once(':').ok_or(format!("bad net {v:?}"))?;
                let (up, carrier, addr) = match st {
                    "up" => (true, true, true),
                    "down" => (false, false, true),
                    "nocarrier" => (true, false, true),
                    "noaddr" => (true, true, false),
                    _ => return Err(format!("bad net state {st:?}")),
                };
                let n = s.network.get_or_insert_with(Network::default);
                let mac = format!("52:54:00:00:00:{:02x}", n.interfaces.len() + 1);
                n.interfaces.push(Interface {
                    name: name.into(),
                    mac: mac.into(),
                    up,
                    carrier,
                    operstate: if up && carrier { "up" } else { "down" }.into(),
                    mtu: 1500,
                    addresses: if addr {
                        vec!["10.0.2.15/24".into()]
                    } else {
                        vec![]
                    },
                    counters: NetCounters::default(),
                });
                if n.interfaces.len() == 1 {
                    n.default_v4 = Some(Route {
                        interface: name.into(),
                        gateway: Some("10.0.2.2".into()),
                    });
                    n.gateway = Some(Neighbour {
                        address: "10.0.2.2".into(),
                        interface: name.into(),
                        state: NeighbourState::Resolved,
                    });
                }
            }
            // route=none: no default route; gw=unresolved: the gateway
            // does not answer; tcp=ADDR:PORT:ok|fail: a TCP check.
            "route" | "gw" | "tcp" => {
                let n = s
                    .network
                    .as_mut()
                    .ok_or(format!("{k}= needs a net= first"))?;
                match (k, v) {
                    ("route", "none") => n.default_v4 = None,
                    ("gw", "unresolved") => {
                        if let Some(g) = n.gateway.as_mut() {
                            g.state = NeighbourState::Unresolved;
                        }
                    }
                    ("tcp", t) => {
                        let (target, r) = t.rsplit_once(':').ok_or(format!("bad tcp {t:?}"))?;
                        let ok = r == "ok";
                        n.tcp.push(TcpCheck {
                            target: target.into(),
                            ok,
                            latency_ms: if ok { 1 } else { 2000 },
                            failures: u32::from(!ok),
                            error: (!ok).then(|| "connection refused".into()),
                        });
                    }
                    _ => return Err(format!("bad {k}={v}")),
                }
            }
            _ => return Err(format!("unknown report field {k:?}")),
        }
    }
    Ok(s)
}

/// `nics VM MAC:up|down ...`: the host's view of the VM's vNICs.
fn nics(args: &[&str]) -> Result<Vec<HostNic>, String> {
    args.iter()
        .map(|a| {
            let (mac, st) = a.rsplit_once(':').ok_or(format!("bad nic {a:?}"))?;
            let link_up = match st {
                "up" => true,
                "down" => false,
                _ => return Err(format!("bad nic state {st:?}")),
            };
            Ok(HostNic {
                mac: mac.to_lowercase(),
                target: Some("vnet0".into()),
                link_up,
                bridge: None,
                tap: None,
            })
        })
        .collect()
}

fn event(words: &[&str]) -> Result<Event, String> {
    let vm = |i: usize| -> Result<VmId, String> {
        words
            .get(i)
            .map(|s| s.to_string())
            .ok_or_else(|| "missing VM name".to_string())
    };
    let arg = |i: usize| -> Result<&str, String> {
        words
            .get(i)
            .copied()
            .ok_or_else(|| "missing argument".to_string())
    };
    let input = |i: Input| -> Result<Event, String> { Ok(Event::Input(vm(1)?, i)) };
    match *words.first().ok_or("empty event")? {
        "domain" => input(Input::Domain(domain_state(arg(2)?)?)),
        "hello" => {
            let boot = arg(2)?.strip_prefix("boot=").ok_or("hello needs boot=ID")?;
            input(Input::Hello {
                boot_id: boot.into(),
            })
        }
        "heartbeat" => input(Input::Heartbeat {
            seq: 0,
            uptime_ms: 0,
        }),
        "report" => input(Input::Report {
            snapshot: Box::new(report(&words[2..])?),
            last_good_ms: None,
        }),
        "notice" => {
            let a = arg(2)?;
            if a == "maintenance-end" {
                input(Input::Notice(Notice::MaintenanceEnd))
            } else {
                let secs = a
                    .strip_prefix("maintenance=")
                    .ok_or("notice maintenance=SECS|maintenance-end")?;
                let duration_s = num(secs, "seconds")? as u32;
                input(Input::Notice(Notice::MaintenanceStart {
                    duration_s,
                    reason: "scripted".into(),
                }))
            }
        }
        "bye" => input(Input::Bye(match arg(2)? {
            "shutdown" => ByeReason::Shutdown,
            "reboot" => ByeReason::Reboot,
            "stopped" => ByeReason::Stopped,
            other => return Err(format!("bad bye reason {other:?}")),
        })),
        "closed" => input(Input::SessionClosed),
        "opened" => input(Input::SessionOpened),
        "rebooted" => input(Input::Rebooted),
        "host-oom-kill" => input(Input::HostOomKill {
            line: words[2..].join(" "),
        }),
        "removed" => input(Input::VmRemoved),
        "nics" => input(Input::Nics(nics(&words[2..])?)),
        "stats" => {
            let mut d = DomainStats::default();
            for a in &words[2..] {
                let (k, v) = a.split_once('=').ok_or(format!("bad stats field {a:?}"))?;
                let v = num(v, k)?;
                match k {
                    "cpu" => d.cpu_time_ns = v * 1_000_000,
                    "block" => d.block_ops = v,
                    "net" => d.net_packets = v,
                    _ => return Err(format!("unknown stats field {k:?}")),
                }
            }
            Ok(Event::Stats(vm(1)?, d))
        }
        "probe" => input(Input::Probe(probe_result(arg(2)?)?)),
        "liveness" => Ok(Event::Liveness(vm(1)?, probe_result(arg(2)?)?)),
        "operator" => {
            let cmd = match arg(2)? {
                "maintenance-on" => {
                    let until = match words.get(3) {
                        Some(f) => Some(num(
                            f.strip_prefix("for=").ok_or("maintenance-on [for=MS]")?,
                            "duration",
                        )?),
                        None => None,
                    };
                    // Relative durations are resolved when the event fires.
                    OperatorCommand::MaintenanceOn { until }
                }
                "maintenance-off" => OperatorCommand::MaintenanceOff,
                "release" => OperatorCommand::Release,
                a if a.starts_with("act=") => OperatorCommand::Act {
                    kind: ActionKind::operator(&a[4..])
                        .ok_or_else(|| format!("bad operator action {:?}", &a[4..]))?,
                },
                other => return Err(format!("bad operator command {other:?}")),
            };
            input(Input::Operator(cmd))
        }
        "stop" => Ok(Event::Stop(
            arg(1)?.to_string(),
            words.get(2).ok_or("missing VM name")?.to_string(),
        )),
        "restart" => Ok(Event::Restart),
        "journal" => Ok(Event::JournalLocked(match arg(1)? {
            "locked" => true,
            "unlocked" => false,
            other => return Err(format!("journal locked|unlocked, not {other:?}")),
        })),
        "listed" => Ok(Event::Listed(vm(1)?, true)),
        "unlisted" => Ok(Event::Listed(vm(1)?, false)),
        "disarm" => Ok(Event::Global(Global::Disarm)),
        "arm" => Ok(Event::Global(Global::Arm)),
        "hypervisor" => match arg(1)? {
            "silent" => Ok(Event::Global(Global::HypervisorSilent {
                for_ms: num(arg(2)?, "duration")?,
                lost: false,
            })),
            "lost" => Ok(Event::Global(Global::HypervisorSilent {
                for_ms: 0,
                lost: true,
            })),
            "answers" => Ok(Event::Global(Global::HypervisorAnswers)),
            other => Err(format!("hypervisor silent MS|lost|answers, not {other:?}")),
        },
        "host" => match arg(1)? {
            "kernel" => Ok(Event::HostKernel(words[2..].join(" "))),
            "fs" => host_fs(&words[2..]),
            other => Err(format!("host kernel TEXT|fs MOUNT ..., not {other:?}")),
        },
        "stalled" => Ok(Event::Global(Global::Stalled {
            ms: num(arg(1)?, "duration")?,
        })),
        other => Err(format!("unknown event {other:?}")),
    }
}

impl Scenario {
    /// Parse scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut sc = Scenario {
            end: 60_000,
            ..Scenario::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            sc.directive(&words, i).map_err(|message| ParseError {
                line: i + 1,
                message,
            })?;
        }
        Ok(sc)
    }

    fn directive(&mut self, w: &[&str], order: usize) -> Result<(), String> {
        match w[0] {
            "vm" => {
                let name = w.get(1).ok_or("vm NAME")?.to_string();
                let mut agent = true;
                let mut mem = (1 << 20, 2 << 20);
                let mut cluster = false;
                for a in &w[2..] {
                    match *a {
                        "agent" => agent = true,
                        "cluster" => cluster = true,
                        "noagent" => agent = false,
                        m if m.starts_with("memory=") => {
                            let (c, x) = m[7..].split_once('/').ok_or("memory=CUR/MAX")?;
                            mem = (num(c, "memory")?, num(x, "memory")?);
                        }
                        other => return Err(format!("unknown vm option {other:?}")),
                    }
                }
                self.vms.push((name, agent, mem, cluster));
            }
            "at" => {
                let t = num(w.get(1).ok_or("at T EVENT")?, "time")?;
                self.timeline.push((t, order, event(&w[2..])?));
            }
            "every" => {
                let (p, ev, from, until) = every(&w[1..])?;
                self.streams.push((
                    from,
                    Stream {
                        period: p,
                        until: until.unwrap_or(u64::MAX),
                        event: ev,
                    },
                ));
            }
            "on" => {
                let action = w.get(1).ok_or("on ACTION VM +D EVENT")?.to_string();
                let vm = w.get(2).ok_or("on ACTION VM +D EVENT")?.to_string();
                let delay = num(w.get(3).ok_or("on ACTION VM +D EVENT")?, "delay")?;
                let rest = &w[4..];
                let (every, ev) = if rest.first() == Some(&"every") {
                    let period = num(rest.get(1).ok_or("every P EVENT [for F]")?, "period")?;
                    let (body, dur) = match rest.iter().position(|x| *x == "for") {
                        Some(i) => (
                            &rest[2..i],
                            num(rest.get(i + 1).ok_or("for F")?, "duration")?,
                        ),
                        None => (&rest[2..], u64::MAX / 4),
                    };
                    (Some((period, dur)), event(body)?)
                } else {
                    (None, event(rest)?)
                };
                self.reactions.push(Reaction {
                    action,
                    vm,
                    delay,
                    every,
                    event: ev,
                });
            }
            "fail" => {
                let action = w.get(1).ok_or("fail ACTION VM [N]")?.to_string();
                let vm = w.get(2).ok_or("fail ACTION VM [N]")?.to_string();
                let n = w.get(3).map(|n| num(n, "count")).transpose()?.unwrap_or(1) as u32;
                self.failures.push((action, vm, n));
            }
            "liveness" => {
                let ev = event(w)?;
                self.timeline.push((0, order, ev));
            }
            "slow" => {
                let action = w.get(1).ok_or("slow ACTION VM MS")?.to_string();
                let vm = w.get(2).ok_or("slow ACTION VM MS")?.to_string();
                let ms = num(w.get(3).ok_or("slow ACTION VM MS")?, "duration")?;
                self.slow.push((action, vm, ms));
            }
            "unlisted" => self
                .unlisted
                .push(w.get(1).ok_or("unlisted VM")?.to_string()),
            "end" => self.end = num(w.get(1).ok_or("end T")?, "time")?,
            "engine" => {
                // `engine KEY=VALUE`: an engine setting as in vigild's
                // [engine] table (TOML value).
                let (k, v) = w
                    .get(1)
                    .and_then(|kv| kv.split_once('='))
                    .ok_or("engine KEY=VALUE")?;
                let line = format!("{k} = {v}");
                toml::from_str::<toml::Table>(&line).map_err(|e| format!("engine {line}: {e}"))?;
                self.engine.push(line);
            }
            other => return Err(format!("unknown directive {other:?}")),
        }
        Ok(())
    }
}

fn every(w: &[&str]) -> Result<(Millis, Event, Millis, Option<Millis>), String> {
    let p = num(w.first().ok_or("every P EVENT from T [until U]")?, "period")?;
    let from_i = w
        .iter()
        .position(|x| *x == "from")
        .ok_or("every needs from T")?;
    let until_i = w.iter().position(|x| *x == "until");
    let ev = event(&w[1..from_i])?;
    let from = num(w.get(from_i + 1).ok_or("from T")?, "time")?;
    let until = until_i
        .map(|i| num(w.get(i + 1).ok_or("until U")?, "time"))
        .transpose()?;
    if p == 0 {
        return Err("period must be > 0".into());
    }
    Ok((p, ev, from, until))
}
