//! `vigilctl`'s client: send a request to vigild's control socket and
//! render the reply as a table or as stable JSON.

mod network;
mod operate;
mod prevent;
pub use network::network_lines;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::daemon::control::{Request, Response, VmView, EVENTS_PAGE};
use crate::engine::{Millis, Record};
use crate::metrics::VmMetrics;

/// A failure with its exit status.
#[derive(Debug)]
pub struct CtlError {
    /// Exit status.
    pub code: u8,
    /// Message.
    pub message: String,
}

/// Exit status of a request the caller may not make (sysexits EX_NOPERM).
pub const EXIT_DENIED: u8 = 77;

fn err(code: u8, message: impl Into<String>) -> CtlError {
    CtlError {
        code,
        message: message.into(),
    }
}

/// Parse `600`, `10m`, `2h`, `1d` (ago) or a ms-since-epoch timestamp into ms since the epoch.
pub fn parse_since(s: &str, now_ms: Millis) -> Result<Millis, CtlError> {
    // Large bare numbers are absolute timestamps.
    if let Ok(n) = s.parse::<Millis>() {
        if n > 1_000_000_000_000 {
            return Ok(n);
        }
    }
    Ok(now_ms.saturating_sub(parse_duration_ms(s)?))
}

/// Parse `90`, `90s`, `10m`, `2h`, `1d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<Millis, CtlError> {
    vigil_protocol::duration::parse_ms(s).map_err(|m| err(2, m))
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

fn fmt_time(ms: Millis) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

fn secs(ms: f64) -> String {
    format!("{:.2}s", ms / 1000.0)
}

/// A control-socket client.
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the socket at `socket`.
    pub fn new(socket: PathBuf) -> Client {
        Client {
            socket,
            timeout: Duration::from_secs(30),
        }
    }

    /// Give up on vigild's answer after `t` (a cluster's monitor must not
    /// hang on a stuck vigild).
    pub fn with_timeout(mut self, t: Duration) -> Client {
        self.timeout = t;
        self
    }

    /// Is the VM all right (or being repaired), or faulted beyond what
    /// vigild can do? Exit 0 / 1; 3 no such VM; 4 vigild unreachable, or 0
    /// with `unreachable_ok` (a cluster's monitor must not take a watchdog
    /// that is down for a failed guest).
    pub fn health(
        &self,
        domain: Option<String>,
        resource: Option<String>,
        unreachable_ok: bool,
        json: bool,
    ) -> Result<(), CtlError> {
        let resource = resource.or_else(|| {
            // As a VirtualDomain monitor script: the resource's own name.
            domain
                .is_none()
                .then(|| std::env::var("OCF_RESOURCE_INSTANCE").ok())
                .flatten()
        });
        if domain.is_some() == resource.is_some() {
            return Err(err(
                2,
                "give a domain or --resource (or run under Pacemaker: OCF_RESOURCE_INSTANCE)",
            ));
        }
        let data = match self.call(&Request::Health { domain, resource }) {
            Ok(d) => d,
            Err(e) if e.code == 3 || e.code == 2 => return Err(e),
            Err(e) if unreachable_ok => {
                eprintln!("vigilctl: {} (not a guest failure: exit 0)", e.message);
                return Ok(());
            }
            Err(e) => return Err(err(4, e.message)),
        };
        if json {
            Self::print_json(&data);
        } else {
            println!(
                "{}: {} ({})",
                data["domain"].as_str().unwrap_or("?"),
                if data["ok"] == Value::Bool(true) {
                    "ok"
                } else {
                    "FAILED"
                },
                data["why"].as_str().unwrap_or("")
            );
        }
        match data["ok"] {
            Value::Bool(true) => Ok(()),
            _ => Err(err(
                1,
                format!("{} is faulted beyond what vigild can do", data["domain"]),
            )),
        }
    }

    /// Send one request, get the data of a successful reply (see
    /// [`EXIT_DENIED`] for a request the caller may not make).
    pub fn call(&self, req: &Request) -> Result<Value, CtlError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                err(
                    EXIT_DENIED,
                    format!(
                        "cannot reach vigild at {}: {e} (root, or a member of its control_group, may)",
                        self.socket.display()
                    ),
                )
            } else {
                err(
                    4,
                    format!("cannot reach vigild at {}: {e}", self.socket.display()),
                )
            }
        })?;
        s.set_read_timeout(Some(self.timeout)).ok();
        s.set_write_timeout(Some(self.timeout)).ok();
        let mut line = serde_json::to_string(req).map_err(|e| err(1, e.to_string()))?;
        line.push('\n');
        s.write_all(line.as_bytes())
            .map_err(|e| err(4, format!("cannot send to vigild: {e}")))?;
        let mut reply = String::new();
        BufReader::new(&s)
            .read_line(&mut reply)
            .map_err(|e| err(4, format!("no reply from vigild: {e}")))?;
        let resp: Response = serde_json::from_str(&reply)
            .map_err(|e| err(1, format!("bad reply from vigild: {e}")))?;
        if resp.ok {
            return Ok(resp.data);
        }
        let code = match resp.class.as_deref() {
            Some("usage") => 2,
            Some("not-found") => 3,
            Some("unavailable") => 4,
            Some("denied") => EXIT_DENIED,
            _ => 1,
        };
        Err(err(
            code,
            resp.error.unwrap_or_else(|| "request failed".into()),
        ))
    }

    fn print_json(v: &Value) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }

    /// `list`.
    pub fn list(&self, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::List)?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let vms: Vec<VmView> =
            serde_json::from_value(data["vms"].clone()).map_err(|e| err(1, e.to_string()))?;
        println!("DOMAIN               STATE        DOMAIN-STATE       AGENT   HEARTBEAT  FAULT");
        for v in vms {
            let agent = match (v.agent_expected, v.agent_connected) {
                (_, true) => "up",
                (true, false) => "down",
                (false, false) => "-",
            };
            let hb = v
                .heartbeat_age_ms
                .map_or("-".into(), |a| format!("{:.1}s ago", a as f64 / 1000.0));
            let fault = match (v.fault, v.fault_id) {
                (Some(k), Some(id)) => format!("#{id} {k}"),
                _ => "-".into(),
            };
            println!(
                "{:<20} {:<12} {:<18} {:<6} {:>10}  {}",
                v.domain, v.state, v.domain_state, agent, hb, fault
            );
        }
        watchdog_lines(&data["watchdog"]);
        Ok(())
    }

    /// `status DOM`.
    pub fn status(&self, domain: &str, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Status {
            domain: domain.into(),
        })?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let v: VmView = serde_json::from_value(data.clone()).map_err(|e| err(1, e.to_string()))?;
        println!("domain:        {}", v.domain);
        println!("uuid:          {}", v.uuid);
        println!("state:         {}", v.state);
        println!("domain state:  {}", v.domain_state);
        println!(
            "agent:         {}",
            if v.agent_connected {
                "connected"
            } else if v.agent_expected {
                "NOT connected"
            } else {
                "none expected"
            }
        );
        if let Some(a) = v.heartbeat_age_ms {
            println!("heartbeat:     {:.1}s ago", a as f64 / 1000.0);
        }
        if let Some(why) = &v.quarantine {
            println!("quarantined:   {why} (vigilctl release {})", v.domain);
        }
        if let (Some(k), Some(id)) = (v.fault, v.fault_id) {
            println!("fault:         #{id} {k}");
        }
        for (label, val) in [
            ("hostname", v.hostname),
            ("agent version", v.agent_version),
            ("boot id", v.boot_id),
        ] {
            if let Some(val) = val {
                println!("{:<15}{val}", format!("{label}:"));
            }
        }
        watchdog_lines(&data["watchdog"]);
        if let Some(t) = data["last_report"]["uptime_ms"].as_u64() {
            println!("guest uptime:  {} s (last report)", t / 1000);
        }
        for line in network_lines(&data["last_report"]["network"], &data["vnics"]) {
            println!("{line}");
        }
        Ok(())
    }

    /// `probe DOM`.
    pub fn probe(&self, domain: &str, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Probe {
            domain: domain.into(),
        })?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let p = &data["processes"];
        println!("{domain}: live snapshot from the agent");
        println!(
            "  uptime:     {} s",
            data["uptime_ms"].as_u64().unwrap_or(0) / 1000
        );
        println!(
            "  processes:  {} total, {} zombie, {} D-state",
            p["total"], p["zombies"], p["uninterruptible"]
        );
        if let Some(m) = data["memory"].as_object() {
            let mib = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0) >> 20;
            println!(
                "  memory:     {} MiB available of {} MiB",
                mib("available_bytes"),
                mib("total_bytes")
            );
        }
        for f in data["filesystems"].as_array().into_iter().flatten() {
            let size = f["size_bytes"].as_u64().unwrap_or(0);
            let used = size.saturating_sub(f["avail_bytes"].as_u64().unwrap_or(0));
            let pct = (used * 100).checked_div(size).unwrap_or(0);
            println!(
                "  fs {:<20} {:>3}% used{}",
                f["mount_point"].as_str().unwrap_or("?"),
                pct,
                if f["read_only"] == Value::Bool(true) {
                    " (ro)"
                } else {
                    ""
                }
            );
        }
        for w in data["watched"].as_array().into_iter().flatten() {
            println!(
                "  watched {}: {}",
                w["target"],
                if w["running"] == Value::Bool(true) {
                    "running"
                } else {
                    "NOT RUNNING"
                }
            );
        }
        for line in network_lines(&data["network"], &Value::Null) {
            println!("  {line}");
        }
        Ok(())
    }

    fn print_events(rows: &[Value]) -> Option<i64> {
        let mut last = None;
        for row in rows {
            last = row["seq"].as_i64().or(last);
            let t = row["t"].as_u64().unwrap_or(0);
            if let Ok(r) = serde_json::from_value::<Record>(row["record"].clone()) {
                println!(
                    "{} {}",
                    fmt_time(t),
                    crate::engine::render(0, &r)
                        .trim_start_matches(|c: char| c == ' ' || c.is_ascii_digit())
                        .trim_start()
                );
            }
        }
        last
    }

    /// `events [--since T] [--follow]`.
    pub fn events(&self, since: Option<&str>, follow: bool, json: bool) -> Result<(), CtlError> {
        let since = since.map(|s| parse_since(s, now_ms())).transpose()?;
        let emit = |rows: &[Value]| {
            if json {
                for r in rows {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
            } else {
                Self::print_events(rows);
            }
            let _ = std::io::stdout().flush();
        };
        // Page by page: vigild answers at most EVENTS_PAGE records at a
        // time; the next page starts after the last row printed.
        let mut req = Request::Events {
            since,
            after: None,
            limit: None,
        };
        let mut last = 0;
        loop {
            let data = self.call(&req)?;
            let rows = data.as_array().cloned().unwrap_or_default();
            if let Some(l) = rows.last().and_then(|r| r["seq"].as_i64()) {
                last = l;
            }
            emit(&rows);
            if rows.len() < EVENTS_PAGE as usize {
                if !follow {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            req = Request::Events {
                since: None,
                after: Some(last),
                limit: None,
            };
        }
    }

    /// `report [--since T]`.
    pub fn report(&self, since: Option<&str>, json: bool) -> Result<(), CtlError> {
        let since = since.map(|s| parse_since(s, now_ms())).transpose()?;
        let data = self.call(&Request::Report { since })?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let vms: Vec<VmMetrics> =
            serde_json::from_value(data["vms"].clone()).map_err(|e| err(1, e.to_string()))?;
        let span = data["to"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(data["from"].as_u64().unwrap_or(0));
        println!(
            "report over {:.1} min (fault rate per hour; MTTD/MTTL/MTTR mean, p95 in brackets)",
            span as f64 / 60_000.0
        );
        println!(
            "{:<16} {:>6} {:>8} {:>16} {:>16} {:>16} {:>12}",
            "DOMAIN", "FAULTS", "RATE/H", "MTTD", "MTTL", "MTTR", "AVAILABILITY"
        );
        for m in vms {
            let p = |s: &crate::metrics::Stat| {
                if s.count == 0 {
                    "-".to_string()
                } else {
                    format!("{} ({})", secs(s.mean_ms), secs(s.p95_ms))
                }
            };
            println!(
                "{:<16} {:>6} {:>8.2} {:>16} {:>16} {:>16} {:>11.4}%",
                m.vm,
                m.faults,
                m.fault_rate_per_hour,
                p(&m.detect),
                p(&m.locate),
                p(&m.repair),
                m.availability * 100.0
            );
            if !m.by_kind.is_empty() {
                let kinds: Vec<String> =
                    m.by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect();
                println!("{:<16} {}", "", kinds.join(" "));
            }
        }
        Ok(())
    }
}

/// What is wrong with vigild's own world, a line each (nothing when all is
/// well): disarmed, blind to the hypervisor, unable to journal.
fn watchdog_lines(w: &Value) {
    if w["armed"] == Value::Bool(false) {
        println!("(disarmed: recovery actions are not taken)");
    }
    let secs = |v: &Value| v["for_ms"].as_u64().unwrap_or(0) / 1000;
    let h = &w["hypervisor"];
    if h["ok"] == Value::Bool(false) {
        println!(
            "HYPERVISOR:    {}{}: no destructive action until it is back",
            h["state"].as_str().unwrap_or("?"),
            h["for_ms"]
                .as_u64()
                .map_or(String::new(), |_| format!(" for {} s", secs(h)))
        );
    }
    let j = &w["journal"];
    if let Some(to) = j["moved_aside"]["to"].as_str() {
        println!(
            "JOURNAL:       found damaged at start ({}): moved aside to {to}, a fresh one begun",
            j["moved_aside"]["why"].as_str().unwrap_or("?")
        );
    }
    if j["ok"] == Value::Bool(false) {
        println!(
            "JOURNAL:       refusing writes for {} s ({}): {} records wait, {} actions held until their intents are durable",
            secs(j),
            j["error"].as_str().unwrap_or("?"),
            j["unwritten_records"],
            j["actions_held"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_since() {
        assert_eq!(parse_duration_ms("90").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("10m").unwrap(), 600_000);
        assert_eq!(parse_duration_ms("2h").unwrap(), 7_200_000);
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert_eq!(parse_since("10m", 1_000_000).unwrap(), 400_000);
        assert_eq!(
            parse_since("1795000000000", 1_800_000_000_000).unwrap(),
            1_795_000_000_000
        );
    }
}
