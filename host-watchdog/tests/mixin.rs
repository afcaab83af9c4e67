//! The Prometheus mixin and the Grafana dashboard against the metrics the
//! code defines: the dashboard is generated here from the registry's
//! metric names (a panel naming a metric vigild does not export fails the
//! generation) and must equal the committed file (`VIGIL_BLESS=1` writes
//! it); every metric the rules name exists; every alert has a severity,
//! a summary, a description and a runbook section.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};
use vigil_watchdog::daemon::metrics::Metrics;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every series name vigild can export.
fn exported() -> BTreeSet<String> {
    Metrics::new().series_names().into_iter().collect()
}

/// The `vigil_…` metric names in a PromQL expression.
fn named(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("vigil_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|p| b[p]);
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        // Not part of a longer name or a recording rule (`vigil:…`).
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':') {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

struct Panels {
    known: BTreeSet<String>,
    panels: Vec<Value>,
    y: u32,
    x: u32,
    id: u32,
}

impl Panels {
    fn row(&mut self, title: &str) {
        if self.x > 0 {
            self.y += 8;
            self.x = 0;
        }
        self.id += 1;
        self.panels.push(json!({
            "type": "row", "id": self.id, "title": title, "collapsed": false,
            "gridPos": { "h": 1, "w": 24, "x": 0, "y": self.y },
            "panels": []
        }));
        self.y += 1;
    }

    /// A panel of `kind` (timeseries, stat, table) over `exprs` (expression,
    /// legend): each metric an expression names must be exported.
    fn panel(&mut self, kind: &str, title: &str, w: u32, unit: &str, exprs: &[(&str, &str)]) {
        for (e, _) in exprs {
            for m in named(e) {
                assert!(
                    self.known.contains(&m),
                    "panel {title:?} names {m}, which vigild does not export"
                );
            }
        }
        if self.x + w > 24 {
            self.y += 8;
            self.x = 0;
        }
        self.id += 1;
        let targets: Vec<Value> = exprs
            .iter()
            .enumerate()
            .map(|(i, (e, legend))| {
                json!({
                    "refId": char::from(b'A' + i as u8).to_string(),
                    "datasource": { "type": "prometheus", "uid": "${datasource}" },
                    "expr": e,
                    "legendFormat": legend,
                    "instant": kind != "timeseries",
                })
            })
            .collect();
        self.panels.push(json!({
            "type": kind, "id": self.id, "title": title,
            "datasource": { "type": "prometheus", "uid": "${datasource}" },
            "gridPos": { "h": 8, "w": w, "x": self.x, "y": self.y },
            "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
            "options": {},
            "targets": targets,
        }));
        self.x += w;
    }
}

/// The dashboard: fleet overview, one VM, recoveries.
fn dashboard() -> Value {
    let mut p = Panels {
        known: exported(),
        panels: Vec::new(),
        y: 0,
        x: 0,
        id: 0,
    };
    p.row("Fleet overview");
    p.panel("stat", "VMs up", 4, "none", &[("sum(vigil_vm_up)", "up")]);
    p.panel(
        "stat",
        "VMs down",
        4,
        "none",
        &[("count(vigil_vm_up == 0) or vector(0)", "down")],
    );
    p.panel(
        "stat",
        "Quarantined",
        4,
        "none",
        &[("sum(vigil_quarantined)", "quarantined")],
    );
    p.panel(
        "stat",
        "Host health (0 ok, 1 degraded, 2 failed)",
        4,
        "none",
        &[("max(vigil_host_health)", "health")],
    );
    p.panel(
        "stat",
        "Open warnings",
        4,
        "none",
        &[("count(vigil_warning == 1) or vector(0)", "warnings")],
    );
    p.panel(
        "stat",
        "Availability (lowest VM)",
        4,
        "percentunit",
        &[("min(vigil_availability_ratio)", "availability")],
    );
    p.panel(
        "timeseries",
        "Faults located per hour, by kind",
        12,
        "none",
        &[(
            "sum by (kind) (increase(vigil_faults_total[1h]))",
            "{{kind}}",
        )],
    );
    p.panel(
        "timeseries",
        "VM states",
        12,
        "none",
        &[("sum by (state) (vigil_vm_state)", "{{state}}")],
    );
    p.panel("timeseries", "Time to detect, locate, repair (p95)", 12, "s", &[
        ("histogram_quantile(0.95, sum by (le) (rate(vigil_detection_seconds_bucket[1h])))", "detect"),
        ("histogram_quantile(0.95, sum by (le) (rate(vigil_localization_seconds_bucket[1h])))", "locate"),
        ("histogram_quantile(0.95, sum by (le) (rate(vigil_repair_seconds_bucket[1h])))", "repair"),
    ]);
    p.panel(
        "table",
        "Open faults",
        12,
        "none",
        &[("vigil_fault_active == 1", "{{domain}} {{kind}} {{layer}}")],
    );
    p.panel(
        "table",
        "Open warnings",
        12,
        "none",
        &[("vigil_warning == 1", "{{domain}} {{kind}} {{subject}}")],
    );
    p.row("One VM ($domain)");
    p.panel(
        "timeseries",
        "Workload up",
        8,
        "none",
        &[("vigil_vm_up{domain=~\"$domain\"}", "{{domain}}")],
    );
    p.panel(
        "timeseries",
        "Heartbeat age",
        8,
        "s",
        &[(
            "vigil_heartbeat_age_seconds{domain=~\"$domain\"}",
            "{{domain}}",
        )],
    );
    p.panel(
        "timeseries",
        "Availability",
        8,
        "percentunit",
        &[(
            "vigil_availability_ratio{domain=~\"$domain\"}",
            "{{domain}}",
        )],
    );
    p.panel(
        "timeseries",
        "Predicted full in",
        8,
        "s",
        &[(
            "vigil_predicted_full_seconds{domain=~\"$domain\"}",
            "{{domain}} {{mount}}",
        )],
    );
    p.panel(
        "timeseries",
        "Guest network: interfaces up, TCP checks",
        8,
        "none",
        &[
            (
                "vigil_guest_net_up{domain=~\"$domain\"}",
                "{{interface}} up",
            ),
            (
                "vigil_guest_tcp_check_up{domain=~\"$domain\"}",
                "tcp {{target}}",
            ),
            ("vigil_vnic_link_up{domain=~\"$domain\"}", "vnic {{mac}}"),
        ],
    );
    p.panel("timeseries", "Guest packets / s", 8, "pps", &[(
        "sum by (interface, direction) (rate(vigil_guest_net_packets{domain=~\"$domain\"}[5m]))",
        "{{interface}} {{direction}}",
    )]);
    p.row("Recoveries");
    p.panel(
        "timeseries",
        "Recovery actions per hour, by action and result",
        12,
        "none",
        &[(
            "sum by (action, result) (increase(vigil_recoveries_total[1h]))",
            "{{action}} {{result}}",
        )],
    );
    p.panel(
        "timeseries",
        "Guest frames rejected / s, by reason",
        12,
        "none",
        &[(
            "sum by (reason) (rate(vigil_guest_frames_rejected_total[5m]))",
            "{{reason}}",
        )],
    );
    p.panel(
        "timeseries",
        "Host kernel events per hour, by class",
        12,
        "none",
        &[(
            "sum by (class) (increase(vigil_host_kernel_events_total[1h]))",
            "{{class}}",
        )],
    );
    p.panel(
        "timeseries",
        "Host filesystems under VM disks: free",
        12,
        "bytes",
        &[("vigil_host_fs_avail_bytes", "{{mount}}")],
    );
    json!({
        "title": "Vigil",
        "uid": "vigil",
        "description": "Generated from vigild's metric names by host-watchdog/tests/mixin.rs (VIGIL_BLESS=1); do not edit by hand.",
        "tags": ["vigil", "libvirt"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "templating": { "list": [
            { "name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source" },
            { "name": "domain", "type": "query", "label": "VM",
              "datasource": { "type": "prometheus", "uid": "${datasource}" },
              "query": "label_values(vigil_vm_up, domain)", "refresh": 2,
              "includeAll": true, "multi": true, "current": {} }
        ]},
        "panels": p.panels,
    })
}

#[test]
fn the_dashboard_is_generated_from_the_exported_metrics() {
    let path = repo().join("packaging/grafana/vigil-dashboard.json");
    let text = serde_json::to_string_pretty(&dashboard()).unwrap() + "\n";
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is not what the metric names generate: run VIGIL_BLESS=1 cargo test -p vigil-watchdog --test mixin",
        path.display()
    );
}

#[test]
fn the_rules_name_exported_metrics_and_every_alert_has_a_runbook() {
    let rules =
        std::fs::read_to_string(repo().join("packaging/prometheus/vigil-rules.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo().join("packaging/prometheus/RUNBOOK.md")).unwrap();
    let known = exported();
    let mut alerts = 0;
    for line in rules.lines() {
        let l = line.trim();
        if let Some(e) = l.strip_prefix("expr:") {
            for m in named(e) {
                assert!(
                    known.contains(&m),
                    "the rules name {m}, which vigild does not export"
                );
            }
        }
        if let Some(name) = l.strip_prefix("- alert:") {
            let name = name.trim();
            alerts += 1;
            assert!(name.starts_with("Vigil"), "{name}: CamelCase Vigil… names");
            assert!(
                runbook.contains(&format!("\n## {name}\n")),
                "{name} has no runbook section"
            );
            let anchor = format!("RUNBOOK.md#{}", name.to_lowercase());
            assert!(rules.contains(&anchor), "{name}: runbook_url {anchor}");
        }
    }
    for needed in ["severity:", "summary:", "description:"] {
        assert_eq!(
            rules.matches(needed).count(),
            alerts,
            "every alert has a {needed}"
        );
    }
    assert!(alerts >= 10, "{alerts} alerts");
    for section in runbook.split("\n## ").skip(1) {
        for part in [
            "**Meaning:**",
            "**Impact:**",
            "**Diagnosis:**",
            "**Mitigation:**",
        ] {
            assert!(
                section.contains(part),
                "runbook {}: no {part}",
                section.lines().next().unwrap_or("")
            );
        }
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        named("sum(rate(vigil_faults_total{x=\"vigil_no\"}[5m])) / vigil:rec:rate5m + avigil_x"),
        vec!["vigil_faults_total", "vigil_no"]
    );
}
