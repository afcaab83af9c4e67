//! The HTML report (pure): one self-contained page — inline CSS and SVG,
//! no scripts, no fonts, nothing fetched — with, per VM, an availability
//! timeline where each fault is a band split into detect, locate and
//! repair, its warnings below it, MTTD/MTTL/MTTR per fault kind, its
//! fault rate and availability; and the host's own events on the same
//! time axis. Everything from the journal (`vigilctl report --html`).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::engine::host::HostHealth;
use crate::engine::{Closure, Millis, Record, HOST};
use crate::metrics::VmMetrics;

/// Timeline width in SVG units.
const W: f64 = 1000.0;

/// Text made safe for HTML (guest-given text included).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// One fault's course.
#[derive(Debug, Clone)]
struct Span {
    id: u64,
    kind: String,
    layer: String,
    subject: Option<String>,
    onset: Millis,
    detected: Millis,
    located: Millis,
    closed: Option<(Millis, Closure)>,
}

/// A warning's course.
#[derive(Debug, Clone)]
struct WarnSpan {
    kind: String,
    subject: Option<String>,
    evidence: String,
    from: Millis,
    to: Option<Millis>,
}

#[derive(Debug, Default)]
struct Lane {
    faults: Vec<Span>,
    warnings: Vec<WarnSpan>,
    /// Closed faults by kind: (detect, locate, repair) ms.
    times: BTreeMap<String, Vec<(Millis, Millis, Millis)>>,
    /// Host health changes (the host's lane only).
    health: Vec<(Millis, HostHealth)>,
}

fn lanes(records: &[(Millis, Record)]) -> BTreeMap<String, Lane> {
    let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
    for (t, r) in records {
        match r {
            Record::Fault {
                vm,
                id,
                kind,
                layer,
                subject,
                onset,
                detected,
                located,
                ..
            } => lanes.entry(vm.clone()).or_default().faults.push(Span {
                id: *id,
                kind: kind.name().into(),
                layer: layer.name().into(),
                subject: subject.clone(),
                onset: *onset,
                detected: *detected,
                located: *located,
                closed: None,
            }),
            Record::Closed {
                vm,
                id,
                kind,
                how,
                at,
                detect_ms,
                locate_ms,
                repair_ms,
                ..
            } => {
                let lane = lanes.entry(vm.clone()).or_default();
                if let Some(f) = lane.faults.iter_mut().find(|f| f.id == *id) {
                    f.closed = Some((*at, *how));
                }
                lane.times
                    .entry(kind.name().into())
                    .or_default()
                    .push((*detect_ms, *locate_ms, *repair_ms));
            }
            Record::Warning {
                vm,
                kind,
                subject,
                evidence,
                ..
            } => lanes
                .entry(vm.clone())
                .or_default()
                .warnings
                .push(WarnSpan {
                    kind: kind.name().into(),
                    subject: subject.clone(),
                    evidence: evidence.clone(),
                    from: *t,
                    to: None,
                }),
            Record::WarningCleared {
                vm, kind, subject, ..
            } => {
                if let Some(w) = lanes
                    .entry(vm.clone())
                    .or_default()
                    .warnings
                    .iter_mut()
                    .find(|w| w.to.is_none() && w.kind == kind.name() && &w.subject == subject)
                {
                    w.to = Some(*t);
                }
            }
            Record::HostHealth { to, .. } => lanes
                .entry(HOST.to_string())
                .or_default()
                .health
                .push((*t, *to)),
            _ => {}
        }
    }
    lanes
}

/// Seconds, two decimals.
fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

/// `HH:MM:SS` (UTC) of a time.
fn clock(ms: Millis) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// The whole page for the window `from..to`.
pub fn render(
    from: Millis,
    to: Millis,
    metrics: &[VmMetrics],
    records: &[(Millis, Record)],
) -> String {
    let to = to.max(from + 1);
    let lanes = lanes(records);
    let x = |t: Millis| (t.clamp(from, to) - from) as f64 * W / (to - from) as f64;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\">\
<title>Vigil report {} to {} UTC</title><style>{CSS}</style></head><body>\n\
<h1>Vigil report</h1><p class=\"window\">{} to {} UTC ({})</p>\n{LEGEND}\n",
        clock(from),
        clock(to),
        clock(from),
        clock(to),
        crate::engine::trend::words(to - from),
    );
    let host = lanes.get(HOST);
    let _ = write!(h, "<section class=\"vm\" id=\"host\"><h2>The host</h2>");
    h.push_str(&timeline("host", host, from, to, &x));
    h.push_str("</section>\n");
    for m in metrics {
        let lane = lanes.get(&m.vm);
        let _ = write!(
            h,
            "<section class=\"vm\" id=\"vm-{id}\"><h2>{name}</h2><p class=\"figures\">\
availability <b>{:.4}%</b> · down {} · {} faults ({:.2}/h) · {} recovered</p>",
            m.availability * 100.0,
            secs(m.downtime_ms as f64),
            m.faults,
            m.fault_rate_per_hour,
            m.recovered,
            id = esc(&m.vm),
            name = esc(&m.vm),
        );
        h.push_str(&timeline(&m.vm, lane, from, to, &x));
        if let Some(l) = lane {
            h.push_str(&kind_table(l));
            h.push_str(&warning_list(l));
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// One lane's SVG: axis, fault bands, warnings, host health.
fn timeline(
    name: &str,
    lane: Option<&Lane>,
    from: Millis,
    to: Millis,
    x: &dyn Fn(Millis) -> f64,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"timeline\" data-lane=\"{}\" viewBox=\"-10 0 1020 78\" role=\"img\" aria-label=\"timeline of {}\">\
<rect class=\"up\" x=\"0\" y=\"8\" width=\"{W}\" height=\"26\"/>",
        esc(name),
        esc(name)
    );
    if let Some(l) = lane {
        // Host health: degraded / failed periods.
        for (i, (t, health)) in l.health.iter().enumerate() {
            let end = l.health.get(i + 1).map_or(to, |n| n.0);
            if *health != HostHealth::Healthy {
                let _ = write!(
                    s,
                    "<rect class=\"health {h}\" x=\"{:.2}\" y=\"8\" width=\"{:.2}\" height=\"26\"><title>host {h} from {}</title></rect>",
                    x(*t),
                    (x(end) - x(*t)).max(1.0),
                    clock(*t),
                    h = health,
                );
            }
        }
        for f in &l.faults {
            let end = f.closed.map_or(to, |c| c.0);
            let about = f
                .subject
                .as_ref()
                .map(|s| format!(" ({})", esc(s)))
                .unwrap_or_default();
            let how = f.closed.map_or("open".to_string(), |(_, how)| {
                format!("{how:?}").to_lowercase()
            });
            for (phase, a, b) in [
                ("detect", f.onset, f.detected),
                ("locate", f.detected, f.located),
                ("repair", f.located, end),
            ] {
                if b < from || a > to {
                    continue;
                }
                let _ = write!(
                    s,
                    "<rect class=\"band {phase}\" data-fault=\"{id}\" data-kind=\"{kind}\" data-phase=\"{phase}\" x=\"{:.2}\" y=\"8\" width=\"{:.2}\" height=\"26\">\
<title>#{id} {kind}{about} in {layer}: {phase} {} ({how})</title></rect>",
                    x(a),
                    (x(b) - x(a)).max(1.5),
                    secs(b.saturating_sub(a) as f64),
                    id = f.id,
                    kind = esc(&f.kind),
                    layer = esc(&f.layer),
                );
            }
        }
        for w in &l.warnings {
            let end = w.to.unwrap_or(to);
            let _ = write!(
                s,
                "<rect class=\"warning\" data-kind=\"{kind}\" x=\"{:.2}\" y=\"38\" width=\"{:.2}\" height=\"8\">\
<title>warning {kind}{sub}: {ev}</title></rect>",
                x(w.from),
                (x(end) - x(w.from)).max(1.5),
                kind = esc(&w.kind),
                sub = w.subject.as_ref().map(|s| format!(" {}", esc(s))).unwrap_or_default(),
                ev = esc(&w.evidence),
            );
        }
    }
    // The axis: five ticks.
    for i in 0..=4u64 {
        let t = from + (to - from) * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            "<line class=\"tick\" x1=\"{p:.2}\" x2=\"{p:.2}\" y1=\"50\" y2=\"56\"/>\
<text class=\"tick\" x=\"{p:.2}\" y=\"70\" text-anchor=\"{anchor}\">{}</text>",
            clock(t),
            p = x(t),
        );
    }
    s.push_str("</svg>");
    s
}

/// MTTD / MTTL / MTTR per fault kind (closed faults in the window).
fn kind_table(l: &Lane) -> String {
    if l.times.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<table class=\"kinds\"><thead><tr><th>fault kind</th><th>closed</th><th>MTTD</th><th>MTTL</th><th>MTTR</th></tr></thead><tbody>",
    );
    for (kind, ts) in &l.times {
        let n = ts.len() as f64;
        let mean = |f: fn(&(Millis, Millis, Millis)) -> Millis| {
            secs(ts.iter().map(f).sum::<Millis>() as f64 / n)
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(kind),
            ts.len(),
            mean(|t| t.0),
            mean(|t| t.1),
            mean(|t| t.2)
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// The warnings raised in the window.
fn warning_list(l: &Lane) -> String {
    if l.warnings.is_empty() {
        return String::new();
    }
    let mut s = String::from("<ul class=\"warnings\">");
    for w in &l.warnings {
        let _ = write!(
            s,
            "<li><b>{}</b>{} from {}{}: {}</li>",
            esc(&w.kind),
            w.subject
                .as_ref()
                .map(|x| format!(" {}", esc(x)))
                .unwrap_or_default(),
            clock(w.from),
            w.to.map(|t| format!(" to {}", clock(t)))
                .unwrap_or_else(|| " (open)".into()),
            esc(&w.evidence)
        );
    }
    s.push_str("</ul>");
    s
}

const LEGEND: &str = "<p class=\"legend\"><span class=\"key up\"></span> up \
<span class=\"key detect\"></span> detecting <span class=\"key locate\"></span> locating \
<span class=\"key repair\"></span> repairing <span class=\"key warning\"></span> warning \
<span class=\"key degraded\"></span> host degraded <span class=\"key failed\"></span> host failed</p>";

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{margin-bottom:0}.window{color:#555;margin-top:.2em}\
section.vm{border-top:1px solid #ccc;padding-top:.5em;margin-top:1em}\
h2{margin:.2em 0}.figures{margin:.2em 0;color:#333}\
svg.timeline{width:100%;height:auto;display:block}\
rect.up{fill:#cdeccd}rect.detect{fill:#f5a623}rect.locate{fill:#9b59b6}rect.repair{fill:#d0021b}\
rect.warning{fill:#f8e71c;stroke:#b8a800;stroke-width:.5}\
rect.health.degraded{fill:#ffd27f}rect.health.failed{fill:#8b0000}\
line.tick{stroke:#888}text.tick{font-size:11px;fill:#555}\
table.kinds{border-collapse:collapse;margin:.5em 0}table.kinds td,table.kinds th{border:1px solid #ccc;padding:.2em .6em;text-align:right}\
table.kinds td:first-child,table.kinds th:first-child{text-align:left}\
.legend .key{display:inline-block;width:1em;height:1em;vertical-align:middle;margin-left:.8em}\
.key.up{background:#cdeccd}.key.detect{background:#f5a623}.key.locate{background:#9b59b6}\
.key.repair{background:#d0021b}.key.warning{background:#f8e71c}.key.degraded{background:#ffd27f}.key.failed{background:#8b0000}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FaultKind, Layer};

    fn fault(id: u64, vm: &str, onset: Millis) -> Record {
        Record::Fault {
            vm: vm.into(),
            id,
            kind: FaultKind::GuestPanic,
            layer: Layer::GuestKernel,
            evidence: vec!["<script>alert(1)</script>".into()],
            subject: Some("<b>".into()),
            onset,
            onset_window_ms: 0,
            detected: onset + 500,
            located: onset + 600,
        }
    }

    #[test]
    fn each_fault_is_three_bands_and_guest_text_is_escaped() {
        let recs = vec![
            (1_500, fault(1, "web", 1_000)),
            (
                5_000,
                Record::Closed {
                    vm: "web".into(),
                    id: 1,
                    kind: FaultKind::GuestPanic,
                    how: Closure::Recovered,
                    at: 5_000,
                    detect_ms: 500,
                    locate_ms: 100,
                    repair_ms: 3_400,
                    flaps: 0,
                },
            ),
            (6_000, fault(2, "web", 6_000)),
        ];
        let m = vec![VmMetrics::clean("web")];
        let page = render(0, 10_000, &m, &recs);
        assert_eq!(page.matches("class=\"band ").count(), 6, "{page}");
        assert_eq!(page.matches("data-fault=\"2\"").count(), 3);
        assert!(page.contains("(open)</title>"), "fault 2 still open");
        assert!(!page.contains("<b>)"), "subject escaped");
        assert!(page.contains("&lt;b&gt;"));
        assert!(!page.contains("http"), "nothing fetched: {page}");
        assert!(page.contains(
            "<td>guest-panic</td><td>1</td><td>0.50 s</td><td>0.10 s</td><td>3.40 s</td>"
        ));
    }
}
