//! Prometheus metrics (prometheus-client): per-VM gauges, counters and
//! histograms with `domain` and `uuid` labels (never the CID), served at
//! `/metrics` by a small hyper server.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

use crate::engine::State;

/// `domain`, `uuid`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
}

/// VM labels plus a state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Engine state.
    pub state: String,
}

/// VM labels plus fault kind and layer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Fault kind.
    pub kind: String,
    /// Layer.
    pub layer: String,
}

/// VM labels plus action and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Action name.
    pub action: String,
    /// `ok` or `failed`.
    pub result: String,
}

/// VM labels plus a rejection reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Why.
    pub reason: String,
}

/// A class of host kernel log records.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostEventLabels {
    /// `oom-kill`, `machine-check`, `memory-error`, `disk-error`, `hung-task`.
    pub class: String,
}

/// A host filesystem under VM disks (or the journal).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MountLabels {
    /// Its mount point.
    pub mount: String,
}

/// An outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `rejected`.
    pub result: String,
}

type FGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The registry, remembering the series names it was given (the mixin's
/// test generates the dashboard from them and checks the rules against
/// them: a family with no series yet is not in the text exposition).
pub struct Reg {
    registry: Registry,
    names: Vec<String>,
}

impl Reg {
    /// Register `metric` as `vigil_NAME`.
    pub fn register<M: Metric + TypedMetric>(&mut self, name: &str, help: &str, metric: M) {
        let full = format!("vigil_{name}");
        match M::TYPE {
            MetricType::Counter => self.names.push(format!("{full}_total")),
            MetricType::Histogram => {
                for s in ["_bucket", "_sum", "_count"] {
                    self.names.push(format!("{full}{s}"));
                }
            }
            _ => self.names.push(full),
        }
        self.registry.register(name, help, metric);
    }
}

/// Every metric vigild exports.
pub struct Metrics {
    registry: Registry,
    /// Every series name registered.
    names: Vec<String>,
    /// 1 when the VM's workload is up.
    pub vm_up: Family<VmLabels, Gauge>,
    /// One-hot engine state.
    pub vm_state: Family<StateLabels, Gauge>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age: Family<VmLabels, FGauge>,
    /// Faults located.
    pub faults: Family<FaultLabels, Counter>,
    /// 1 while a fault is open (the series goes when it closes).
    pub fault_active: Family<FaultLabels, Gauge>,
    /// Recovery actions finished.
    pub recoveries: Family<RecoveryLabels, Counter>,
    /// Detection times.
    pub detect: Family<VmLabels, Histogram>,
    /// Localization times.
    pub locate: Family<VmLabels, Histogram>,
    /// Repair times.
    pub repair: Family<VmLabels, Histogram>,
    /// Availability since vigild started.
    pub availability: Family<VmLabels, FGauge>,
    /// 1 when quarantined.
    pub quarantined: Family<VmLabels, Gauge>,
    /// Frames and sessions rejected, by reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Host kernel log records, by class.
    pub host_events: Family<HostEventLabels, Counter>,
    /// The host's health: 0 healthy, 1 degraded, 2 failed.
    pub host_health: Gauge,
    /// 1 while vigild is connected to libvirtd.
    pub hypervisor_connected: Gauge,
    /// 1 while the journal takes writes.
    pub journal_writable: Gauge,
    /// Records waiting to be written (the journal refusing writes).
    pub journal_unwritten: Gauge,
    /// Actions held because their intents are not durable yet.
    pub actions_held: Gauge,
    /// Config reloads, by result.
    pub reloads: Family<ResultLabels, Counter>,
    /// Bytes free on each host filesystem under VM disks.
    pub host_fs_avail: Family<MountLabels, Gauge>,
    /// Their sizes.
    pub host_fs_size: Family<MountLabels, Gauge>,
    /// Per-interface network state.
    pub net: super::net_metrics::NetMetrics,
    /// Open warnings.
    pub warn: super::warn_metrics::WarnMetrics,
}

impl Metrics {
    /// Register every family.
    pub fn new() -> Metrics {
        let mut registry = Reg {
            registry: Registry::with_prefix("vigil"),
            names: Vec::new(),
        };
        let hist = || {
            Family::<VmLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 14))
            })
        };
        let m = Metrics {
            vm_up: Family::default(),
            vm_state: Family::default(),
            heartbeat_age: Family::default(),
            faults: Family::default(),
            fault_active: Family::default(),
            recoveries: Family::default(),
            detect: hist(),
            locate: hist(),
            repair: hist(),
            availability: Family::default(),
            quarantined: Family::default(),
            rejected: Family::default(),
            host_events: Family::default(),
            host_health: Gauge::default(),
            hypervisor_connected: Gauge::default(),
            journal_writable: Gauge::default(),
            journal_unwritten: Gauge::default(),
            actions_held: Gauge::default(),
            reloads: Family::default(),
            host_fs_avail: Family::default(),
            host_fs_size: Family::default(),
            net: Default::default(),
            warn: Default::default(),
            registry: Registry::default(),
            names: Vec::new(),
        };
        m.net.register(&mut registry);
        m.warn.register(&mut registry);
        registry.register(
            "vm_up",
            "Whether the VM's workload is up (1) or in an outage (0)",
            m.vm_up.clone(),
        );
        registry.register(
            "vm_state",
            "Engine state of the VM (one-hot by state)",
            m.vm_state.clone(),
        );
        registry.register(
            "heartbeat_age_seconds",
            "Seconds since the agent's last heartbeat",
            m.heartbeat_age.clone(),
        );
        registry.register(
            "faults",
            "Faults located, by kind and layer",
            m.faults.clone(),
        );
        registry.register(
            "fault_active",
            "1 while a fault is open, by kind and layer (an alert's source: a counter's first increment is not an increase)",
            m.fault_active.clone(),
        );
        registry.register(
            "recoveries",
            "Recovery actions finished, by action and result",
            m.recoveries.clone(),
        );
        registry.register(
            "detection_seconds",
            "Time from fault onset to detection",
            m.detect.clone(),
        );
        registry.register(
            "localization_seconds",
            "Time from detection to localization",
            m.locate.clone(),
        );
        registry.register(
            "repair_seconds",
            "Time from localization to verified recovery",
            m.repair.clone(),
        );
        registry.register(
            "availability_ratio",
            "Uptime / total time since vigild started",
            m.availability.clone(),
        );
        registry.register(
            "quarantined",
            "Whether the VM is quarantined",
            m.quarantined.clone(),
        );
        registry.register(
            "guest_frames_rejected",
            "Guest frames or sessions rejected, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "host_kernel_events",
            "Records of the host's kernel log that tell about the host, by class",
            m.host_events.clone(),
        );
        registry.register(
            "host_health",
            "The host's own health: 0 healthy, 1 degraded, 2 failed",
            m.host_health.clone(),
        );
        registry.register(
            "hypervisor_connected",
            "1 while vigild is connected to libvirtd (0: lost, reconnecting; no destructive action)",
            m.hypervisor_connected.clone(),
        );
        registry.register(
            "journal_writable",
            "1 while the journal takes writes (0: actions wait until their intents are durable)",
            m.journal_writable.clone(),
        );
        registry.register(
            "journal_unwritten_records",
            "Journal records waiting to be written while the journal refuses writes",
            m.journal_unwritten.clone(),
        );
        registry.register(
            "actions_held",
            "Recovery actions waiting for their intents to be durable in the journal",
            m.actions_held.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP, vigilctl reload), by result",
            m.reloads.clone(),
        );
        registry.register(
            "host_fs_avail_bytes",
            "Bytes free to unprivileged writers on each host filesystem under VM disks or the journal",
            m.host_fs_avail.clone(),
        );
        registry.register(
            "host_fs_size_bytes",
            "Size of each host filesystem under VM disks or the journal",
            m.host_fs_size.clone(),
        );
        Metrics {
            registry: registry.registry,
            names: registry.names,
            ..m
        }
    }

    /// A guest's network from its last report.
    pub fn set_guest_network(
        &self,
        domain: &str,
        uuid: &str,
        n: &vigil_protocol::snapshot::Network,
    ) {
        self.net.guest(domain, uuid, n);
    }

    /// A VM's vNICs as the host sees them.
    pub fn set_vnics(&self, domain: &str, uuid: &str, nics: &[crate::engine::HostNic]) {
        self.net.vnics(domain, uuid, nics);
    }

    /// Set the one-hot state gauges of a VM.
    pub fn set_state(&self, domain: &str, uuid: &str, state: State) {
        for s in State::ALL {
            let l = StateLabels {
                domain: domain.into(),
                uuid: uuid.into(),
                state: s.name().into(),
            };
            self.vm_state.get_or_create(&l).set(i64::from(s == state));
        }
        let l = VmLabels {
            domain: domain.into(),
            uuid: uuid.into(),
        };
        self.quarantined
            .get_or_create(&l)
            .set(i64::from(state == State::Quarantined));
    }

    /// Every series name vigild exports (counters with `_total`,
    /// histograms with `_bucket`, `_sum`, `_count`).
    pub fn series_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            log::error!("cannot encode metrics: {e}");
        }
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serve `/metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let m = m.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(m.encode())
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body("see /metrics\n".to_string())
                    };
                    resp
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
