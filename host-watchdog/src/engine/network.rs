//! Network conditions: the guest's view (its agent's report) joined with
//! the host's (the vNICs' link, tap and bridge), so that the layer is
//! named from both sides. A guest that sees no carrier while libvirt says
//! the link is down has a host fault, not a guest one; a guest whose links
//! and addresses are fine but whose gateway or TCP checks fail has one
//! beyond this host. Only what worked before can be lost: an interface
//! never seen up with an address, or a route never seen, is not a fault.

use std::collections::BTreeSet;

use vigil_protocol::limits::{truncate_utf8, MAX_TEXT};
use vigil_protocol::snapshot::{NeighbourState, Network};

use super::evidence::{Condition, MAX_EVIDENCE};
use super::model::{FaultKind, HostNic, Millis};

/// The subject of a network-down for a lost default route (an interface's
/// is its name).
pub const DEFAULT_ROUTE: &str = "default route";

/// What the engine knows of one VM's network.
#[derive(Debug, Clone, Default)]
pub struct NetView {
    /// The host's vNICs, as last told.
    pub host: Vec<HostNic>,
    /// The guest's network, as last reported (this session).
    pub guest: Option<Network>,
    /// Guest interfaces seen up with carrier and an address this boot.
    pub worked: BTreeSet<String>,
    /// vNICs (MACs) seen up on the host: one defined with its link down
    /// (an operator's choice) is not a fault.
    pub host_worked: BTreeSet<String>,
    /// The interface a default route went out of this boot, if one did.
    pub routed: Option<String>,
    /// Conditions seen, not yet held long enough: (kind, subject), since
    /// when, and the last look before (its onset lies in between).
    pub pending: Vec<(FaultKind, Option<String>, Millis, Millis)>,
    /// When either side was last looked at (or the agent last checked
    /// and found nothing new), and the look before that one.
    pub last_look: Option<Millis>,
    look_before: Option<Millis>,
}

fn cond(kind: FaultKind, subject: String, evidence: String) -> Condition {
    Condition {
        kind,
        subject: Some(truncate_utf8(&subject, MAX_TEXT).to_string()),
        evidence: truncate_utf8(&evidence, MAX_EVIDENCE).to_string(),
        event_at: None,
    }
}

impl NetView {
    /// The host's vNICs now: remember which were up.
    pub fn host_seen(&mut self, nics: Vec<HostNic>) {
        for n in &nics {
            if n.problem().is_none() && self.host_worked.len() < 64 {
                self.host_worked.insert(n.mac.clone());
            }
        }
        self.host = nics;
    }

    /// A new guest report: remember what works (the baseline).
    pub fn reported(&mut self, n: Network) {
        for i in &n.interfaces {
            if i.up && i.carrier && !i.addresses.is_empty() && self.worked.len() < 64 {
                self.worked.insert(i.name.to_string());
            }
        }
        if let Some(r) = n.default_v4.as_ref().or(n.default_v6.as_ref()) {
            self.routed = Some(r.interface.to_string());
        }
        self.guest = Some(n);
    }

    /// The guest booted again: what worked in the last boot is no
    /// baseline for this one (its network may take a while to come up).
    pub fn new_boot(&mut self) {
        self.worked.clear();
        self.routed = None;
        self.guest = None;
        self.pending.clear();
        self.last_look = None;
        self.look_before = None;
    }

    /// Every network condition the two views show now. `guest_live`: the
    /// agent's session is open (else its last report is no evidence).
    pub fn conditions(&self, guest_live: bool) -> Vec<Condition> {
        let mut out = Vec::new();
        let guest = self.guest.as_ref().filter(|_| guest_live);
        let guest_if = |mac: &str| {
            guest.and_then(|g| {
                g.interfaces
                    .iter()
                    .find(|i| i.mac.eq_ignore_ascii_case(mac))
            })
        };
        // The host's side first: what it shows explains the guest's.
        for nic in self
            .host
            .iter()
            .filter(|n| self.host_worked.contains(&n.mac))
        {
            let Some(problem) = nic.problem() else {
                continue;
            };
            let seen = match guest_if(&nic.mac) {
                Some(i) if !i.carrier => format!("; guest {} sees no carrier", i.name),
                Some(i) => format!("; guest {} still shows carrier", i.name),
                None => String::new(),
            };
            out.push(cond(
                FaultKind::VnicLinkDown,
                nic.mac.clone(),
                format!("{problem}{seen}"),
            ));
        }
        let Some(g) = guest else {
            return out;
        };
        let host_down = |mac: &str| {
            self.host
                .iter()
                .any(|n| n.mac.eq_ignore_ascii_case(mac) && n.problem().is_some())
        };
        let mut guest_down = false;
        for i in &g.interfaces {
            if !self.worked.contains(i.name.as_str()) || host_down(&i.mac) {
                continue;
            }
            let host_says = if self.host.iter().any(|n| n.mac.eq_ignore_ascii_case(&i.mac)) {
                "the host's link is up"
            } else {
                "the host has no vNIC with its MAC"
            };
            let why = if !i.up {
                format!("guest {} is administratively down ({host_says})", i.name)
            } else if !i.carrier {
                format!("guest {} has no carrier ({host_says})", i.name)
            } else if i.addresses.is_empty() {
                format!("guest {} lost its addresses", i.name)
            } else {
                continue;
            };
            guest_down = true;
            out.push(cond(FaultKind::NetworkDown, i.name.to_string(), why));
        }
        if let (false, Some(via)) = (guest_down, &self.routed) {
            let linked = g.interfaces.iter().any(|i| i.up && i.carrier);
            if g.default_v4.is_none() && g.default_v6.is_none() && linked {
                out.push(cond(
                    FaultKind::NetworkDown,
                    DEFAULT_ROUTE.into(),
                    format!("guest has no default route (it had one via {via})"),
                ));
                guest_down = true;
            }
        }
        if guest_down || out.iter().any(|c| c.kind == FaultKind::VnicLinkDown) {
            return out; // nothing beyond the host can be judged through a broken link
        }
        if let Some(gw) = g
            .gateway
            .as_ref()
            .filter(|n| n.state == NeighbourState::Unresolved)
        {
            out.push(cond(
                FaultKind::NetworkUnreachable,
                format!("gateway {}", gw.address),
                format!(
                    "the default gateway {} on {} does not answer (neighbour unresolved)",
                    gw.address, gw.interface
                ),
            ));
        }
        for t in g.tcp.iter().filter(|t| !t.ok) {
            out.push(cond(
                FaultKind::NetworkUnreachable,
                format!("tcp {}", t.target),
                format!(
                    "TCP check {} failed {} times in a row: {}",
                    t.target,
                    t.failures,
                    t.error.as_deref().unwrap_or("no answer")
                ),
            ));
        }
        out
    }

    /// Fold the conditions seen at `now` into the pending list; those held
    /// for `hold` ms, most severe first, with when each was first seen and
    /// the look before.
    pub fn held(
        &mut self,
        now: Millis,
        conds: &[Condition],
        hold: Millis,
    ) -> Vec<(Condition, Millis, Millis)> {
        let key = |c: &Condition| (c.kind, c.subject.clone());
        self.pending
            .retain(|(k, s, _, _)| conds.iter().any(|c| key(c) == (*k, s.clone())));
        // A second look at the same instant (the host's side read because
        // the guest's changed) starts from the look before.
        let before = if self.last_look == Some(now) {
            self.look_before
        } else {
            self.last_look
        }
        .unwrap_or(now)
        .min(now);
        for c in conds {
            if !self
                .pending
                .iter()
                .any(|(k, s, _, _)| (*k, s.clone()) == key(c))
            {
                self.pending.push((c.kind, c.subject.clone(), now, before));
            }
        }
        if self.last_look != Some(now) {
            self.look_before = self.last_look;
            self.last_look = Some(now);
        }
        let mut due: Vec<(Condition, Millis, Millis)> = conds
            .iter()
            .filter_map(|c| {
                let (_, _, since, from) = self
                    .pending
                    .iter()
                    .find(|(k, s, _, _)| (*k, s.clone()) == key(c))?;
                (now.saturating_sub(*since) >= hold).then(|| (c.clone(), *since, *from))
            })
            .collect();
        due.sort_by_key(|(c, _, _)| std::cmp::Reverse(c.kind.severity()));
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::Tap;
    use vigil_protocol::snapshot::{Interface, Neighbour, Route, TcpCheck};

    const MAC: &str = "52:54:00:00:00:01";

    fn eth0(up: bool, carrier: bool, addr: bool) -> Interface {
        Interface {
            name: "eth0".into(),
            mac: MAC.into(),
            up,
            carrier,
            operstate: if up && carrier { "up" } else { "down" }.into(),
            mtu: 1500,
            addresses: if addr {
                vec!["10.0.2.15/24".into()]
            } else {
                vec![]
            },
            ..Interface::default()
        }
    }

    fn net(i: Interface, route: bool) -> Network {
        Network {
            interfaces: vec![i],
            default_v4: route.then(|| Route {
                interface: "eth0".into(),
                gateway: Some("10.0.2.2".into()),
            }),
            gateway: Some(Neighbour {
                address: "10.0.2.2".into(),
                interface: "eth0".into(),
                state: NeighbourState::Resolved,
            }),
            ..Network::default()
        }
    }

    fn nic(link_up: bool) -> HostNic {
        HostNic {
            mac: MAC.into(),
            target: Some("vnet0".into()),
            link_up,
            bridge: None,
            tap: None,
        }
    }

    fn kinds(v: &NetView) -> Vec<(FaultKind, String)> {
        v.conditions(true)
            .into_iter()
            .map(|c| (c.kind, c.subject.unwrap()))
            .collect()
    }

    fn worked() -> NetView {
        let mut v = NetView::default();
        v.host_seen(vec![nic(true)]);
        v.reported(net(eth0(true, true, true), true));
        assert!(kinds(&v).is_empty());
        v
    }

    #[test]
    fn no_carrier_with_the_host_link_down_is_the_hosts_fault() {
        let mut v = worked();
        v.host_seen(vec![nic(false)]);
        v.reported(net(eth0(true, false, true), true));
        assert_eq!(kinds(&v), [(FaultKind::VnicLinkDown, MAC.to_string())]);
        assert!(v.conditions(true)[0]
            .evidence
            .contains("guest eth0 sees no carrier"));
        // With the host's link up it is the guest's.
        v.host_seen(vec![nic(true)]);
        assert_eq!(kinds(&v), [(FaultKind::NetworkDown, "eth0".to_string())]);
    }

    #[test]
    fn a_tap_down_or_off_its_bridge_is_the_hosts_fault() {
        let mut n = nic(true);
        n.bridge = Some("br0".into());
        n.tap = Some(Tap {
            up: true,
            master: Some("br0".into()),
        });
        assert_eq!(n.problem(), None);
        n.tap = Some(Tap {
            up: true,
            master: None,
        });
        assert!(n.problem().unwrap().contains("not on its bridge br0"));
        n.tap = Some(Tap {
            up: false,
            master: Some("br0".into()),
        });
        assert!(n.problem().unwrap().contains("is down on the host"));
    }

    #[test]
    fn the_guest_losing_its_link_address_or_route() {
        let mut v = worked();
        v.reported(net(eth0(false, false, true), true));
        assert_eq!(kinds(&v), [(FaultKind::NetworkDown, "eth0".to_string())]);
        assert!(v.conditions(true)[0]
            .evidence
            .contains("administratively down"));
        v.reported(net(eth0(true, true, false), true));
        assert!(v.conditions(true)[0]
            .evidence
            .contains("lost its addresses"));
        v.reported(net(eth0(true, true, true), false));
        assert_eq!(
            kinds(&v),
            [(FaultKind::NetworkDown, DEFAULT_ROUTE.to_string())]
        );
        assert!(v.conditions(true)[0].evidence.contains("no default route"));
        // A stale report (no session) is no evidence of the guest's.
        assert!(v.conditions(false).is_empty());
    }

    #[test]
    fn what_never_worked_is_not_lost() {
        let mut v = NetView::default();
        v.host_seen(vec![nic(true)]);
        v.reported(net(eth0(false, false, false), false));
        assert!(kinds(&v).is_empty());
        // A vNIC defined with its link down (never up) is no fault.
        let mut v = NetView::default();
        v.host_seen(vec![nic(false)]);
        assert!(kinds(&v).is_empty());
        // Nor after a new boot, until it works in that boot.
        let mut v = worked();
        v.new_boot();
        v.reported(net(eth0(true, true, false), false));
        assert!(kinds(&v).is_empty());
        // No interfaces at all: nothing to judge.
        v.reported(Network::default());
        assert!(kinds(&v).is_empty());
    }

    #[test]
    fn beyond_the_host_only_when_both_sides_are_fine() {
        let mut v = worked();
        let mut n = net(eth0(true, true, true), true);
        n.gateway.as_mut().unwrap().state = NeighbourState::Unresolved;
        n.tcp = vec![TcpCheck {
            target: "10.0.2.2:80".into(),
            ok: false,
            latency_ms: 2000,
            failures: 2,
            error: Some("connection refused".into()),
        }];
        v.reported(n.clone());
        assert_eq!(
            kinds(&v),
            [
                (
                    FaultKind::NetworkUnreachable,
                    "gateway 10.0.2.2".to_string()
                ),
                (FaultKind::NetworkUnreachable, "tcp 10.0.2.2:80".to_string())
            ]
        );
        // The same checks failing behind a down link are the link's.
        v.host_seen(vec![nic(false)]);
        assert_eq!(kinds(&v), [(FaultKind::VnicLinkDown, MAC.to_string())]);
    }

    #[test]
    fn a_condition_must_hold_before_it_is_due() {
        let mut v = worked();
        assert!(v.held(400, &[], 5_000).is_empty());
        v.reported(net(eth0(false, false, true), true));
        let c = v.conditions(true);
        assert!(v.held(1_000, &c, 5_000).is_empty());
        assert!(v.held(5_999, &c, 5_000).is_empty());
        let due = v.held(6_000, &c, 5_000);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].1, due[0].2), (1_000, 400));
        // A flap: gone, then back, starts over.
        assert!(v.held(6_500, &[], 5_000).is_empty());
        assert!(v.held(7_000, &c, 5_000).is_empty());
        assert_eq!(v.held(12_000, &c, 5_000)[0].2, 6_500);
    }
}
