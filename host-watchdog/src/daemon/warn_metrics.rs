//! Warning metrics: each open warning, and how long until what it
//! predicts. Set from the engine's open warnings after every report; a
//! VM's series are those of its open warnings (bounded by the protocol's
//! limits on filesystems and services) and the closed ones are removed.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::engine::warn::{Warning, WarningKind};
use crate::engine::Millis;

type FGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// An open warning.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WarnLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Warning kind.
    pub kind: String,
    /// Mount point or service ("" when none).
    pub subject: String,
}

/// A guest filesystem.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestMountLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Mount point in the guest.
    pub mount: String,
}

#[derive(Default)]
struct Seen {
    warnings: Vec<WarnLabels>,
    mounts: Vec<GuestMountLabels>,
}

/// The warning families.
#[derive(Default)]
pub struct WarnMetrics {
    active: Family<WarnLabels, Gauge>,
    eta: Family<WarnLabels, FGauge>,
    full: Family<GuestMountLabels, FGauge>,
    seen: Mutex<HashMap<String, Seen>>,
}

impl WarnMetrics {
    /// Register the families.
    pub fn register(&self, r: &mut super::metrics::Reg) {
        r.register(
            "warning",
            "An open warning: what a guest's trends announce before it is a fault",
            self.active.clone(),
        );
        r.register(
            "warning_eta_seconds",
            "Seconds until what an open warning predicts (a full disk, exhausted memory)",
            self.eta.clone(),
        );
        r.register(
            "predicted_full_seconds",
            "Seconds until a guest filesystem is full at the rate it fills (open predicted-full warnings only)",
            self.full.clone(),
        );
    }

    /// A VM's open warnings now.
    pub fn set(&self, domain: &str, uuid: &str, now: Millis, open: &[Warning]) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let s = seen.entry(domain.to_string()).or_default();
        for old in std::mem::take(&mut s.warnings) {
            self.active.remove(&old);
            self.eta.remove(&old);
        }
        for old in std::mem::take(&mut s.mounts) {
            self.full.remove(&old);
        }
        for w in open {
            let l = WarnLabels {
                domain: domain.into(),
                uuid: uuid.into(),
                kind: w.kind.name().into(),
                subject: w.subject.clone().unwrap_or_default(),
            };
            self.active.get_or_create(&l).set(1);
            if let Some(eta) = w.eta {
                let secs = eta.saturating_sub(now) as f64 / 1000.0;
                self.eta.get_or_create(&l).set(secs);
                if w.kind == WarningKind::PredictedFull {
                    let m = GuestMountLabels {
                        domain: domain.into(),
                        uuid: uuid.into(),
                        mount: l.subject.clone(),
                    };
                    self.full.get_or_create(&m).set(secs);
                    s.mounts.push(m);
                }
            }
            s.warnings.push(l);
        }
    }
}
