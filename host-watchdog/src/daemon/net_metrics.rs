//! Per-interface metrics: the guest's interfaces and TCP checks (from its
//! reports) and the host's vNICs. A guest names its interfaces, so the
//! series of one VM are bounded by its last report's (at most
//! `MAX_INTERFACES` and `MAX_TCP_CHECKS`) and those it no longer shows
//! are removed.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vigil_protocol::snapshot::Network;

use crate::engine::HostNic;

/// A guest interface.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IfaceLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Interface name in the guest.
    pub interface: String,
}

/// A guest interface and a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IfaceDirLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Interface name in the guest.
    pub interface: String,
    /// `rx` or `tx`.
    pub direction: String,
}

/// A TCP check of a guest's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// `address:port`.
    pub target: String,
}

/// A vNIC on the host.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VnicLabels {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Its MAC address.
    pub mac: String,
}

#[derive(Default)]
struct Series {
    ifaces: Vec<IfaceLabels>,
    tcp: Vec<TcpLabels>,
    vnics: Vec<VnicLabels>,
}

/// The network families.
#[derive(Default)]
pub struct NetMetrics {
    up: Family<IfaceLabels, Gauge>,
    packets: Family<IfaceDirLabels, Gauge>,
    errors: Family<IfaceDirLabels, Gauge>,
    dropped: Family<IfaceDirLabels, Gauge>,
    tcp_up: Family<TcpLabels, Gauge>,
    vnic_up: Family<VnicLabels, Gauge>,
    seen: Mutex<HashMap<String, Series>>,
}

impl NetMetrics {
    /// Register the families.
    pub fn register(&self, r: &mut super::metrics::Reg) {
        r.register(
            "guest_net_up",
            "Whether a guest interface is up with carrier (from its agent)",
            self.up.clone(),
        );
        r.register(
            "guest_net_packets",
            "Packets through a guest interface since it appeared",
            self.packets.clone(),
        );
        r.register(
            "guest_net_errors",
            "Errors on a guest interface since it appeared",
            self.errors.clone(),
        );
        r.register(
            "guest_net_dropped",
            "Packets a guest interface dropped since it appeared",
            self.dropped.clone(),
        );
        r.register(
            "guest_tcp_check_up",
            "Whether a guest's TCP check connected last time",
            self.tcp_up.clone(),
        );
        r.register(
            "vnic_link_up",
            "Whether a vNIC's link is up on the host (libvirt link state, tap, bridge)",
            self.vnic_up.clone(),
        );
    }

    /// A guest's network from its last report.
    pub fn guest(&self, domain: &str, uuid: &str, n: &Network) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let s = seen.entry(domain.to_string()).or_default();
        let dirs = |l: &IfaceLabels, d: &str| IfaceDirLabels {
            domain: l.domain.clone(),
            uuid: l.uuid.clone(),
            interface: l.interface.clone(),
            direction: d.into(),
        };
        for old in std::mem::take(&mut s.ifaces) {
            self.up.remove(&old);
            for d in ["rx", "tx"] {
                for f in [&self.packets, &self.errors, &self.dropped] {
                    f.remove(&dirs(&old, d));
                }
            }
        }
        for old in std::mem::take(&mut s.tcp) {
            self.tcp_up.remove(&old);
        }
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for i in &n.interfaces {
            let l = IfaceLabels {
                domain: domain.into(),
                uuid: uuid.into(),
                interface: i.name.to_string(),
            };
            self.up.get_or_create(&l).set(i64::from(i.up && i.carrier));
            let c = &i.counters;
            for (f, rx, tx) in [
                (&self.packets, c.rx_packets, c.tx_packets),
                (&self.errors, c.rx_errors, c.tx_errors),
                (&self.dropped, c.rx_dropped, c.tx_dropped),
            ] {
                f.get_or_create(&dirs(&l, "rx")).set(g(rx));
                f.get_or_create(&dirs(&l, "tx")).set(g(tx));
            }
            s.ifaces.push(l);
        }
        for t in &n.tcp {
            let l = TcpLabels {
                domain: domain.into(),
                uuid: uuid.into(),
                target: t.target.to_string(),
            };
            self.tcp_up.get_or_create(&l).set(i64::from(t.ok));
            s.tcp.push(l);
        }
    }

    /// A VM's vNICs as the host sees them.
    pub fn vnics(&self, domain: &str, uuid: &str, nics: &[HostNic]) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let s = seen.entry(domain.to_string()).or_default();
        for old in std::mem::take(&mut s.vnics) {
            self.vnic_up.remove(&old);
        }
        for n in nics {
            let l = VnicLabels {
                domain: domain.into(),
                uuid: uuid.into(),
                mac: n.mac.clone(),
            };
            self.vnic_up
                .get_or_create(&l)
                .set(i64::from(n.problem().is_none()));
            s.vnics.push(l);
        }
    }
}
