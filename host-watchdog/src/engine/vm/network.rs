//! A VM's network faults: the conditions `engine/network.rs` derives from
//! the guest's and the host's views, held for the hold-off, located, and
//! closed only when one side shows the subject good again.

use super::*;
use crate::engine::network::DEFAULT_ROUTE;

impl Vm {
    /// Judge the network from both views now.
    pub(super) fn review_network(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) {
        let guest_live = self.session_open && self.domain == DomainState::Running;
        let conds = self.net.conditions(guest_live);
        if let Some(f) = self
            .fault
            .clone()
            .filter(|f| f.kind.basis() == Basis::Network)
        {
            let still = conds
                .iter()
                .any(|c| c.kind == f.kind && c.subject == f.subject);
            if still {
                if let Some(f) = self.fault.as_mut() {
                    f.last_seen = now;
                }
            } else if now > f.verify_from {
                if let Some(why) = self.network_shown_good(&f, guest_live) {
                    self.close_verified(now, why, out);
                }
            }
        }
        let due = self.net.held(now, &conds, ctx.cfg.network_hold_ms);
        // During a host-wide event a network condition waits: it is
        // located (and acted on) once the breaker closes, if it lasts.
        if self.frozen() || self.domain != DomainState::Running || ctx.host_wide {
            return;
        }
        if let Some((c, since, from)) = due.into_iter().next() {
            let onset = Onset::between(from, since);
            self.locate(
                now,
                onset,
                since,
                c.kind,
                c.subject,
                vec![c.evidence],
                ctx,
                out,
            );
        }
    }

    /// Whether the sides a network fault is about show its subject, and
    /// good, and how (never closed because the subject went missing).
    fn network_shown_good(&self, f: &ActiveFault, guest_live: bool) -> Option<&'static str> {
        let sub = f.subject.as_deref().unwrap_or_default();
        let guest = self.net.guest.as_ref().filter(|_| guest_live);
        match f.kind {
            FaultKind::VnicLinkDown => {
                let host_up = self
                    .net
                    .host
                    .iter()
                    .any(|n| n.mac == sub && n.problem().is_none());
                // The guest, if it can say, has its carrier back too.
                let carrierless = guest.is_some_and(|g| {
                    g.interfaces
                        .iter()
                        .any(|i| i.mac.eq_ignore_ascii_case(sub) && i.up && !i.carrier)
                });
                (host_up && !carrierless)
                    .then_some("the host's link is up and the guest has its carrier")
            }
            FaultKind::NetworkDown if sub == DEFAULT_ROUTE => guest
                .is_some_and(|g| g.default_v4.is_some() || g.default_v6.is_some())
                .then_some("the guest has a default route again"),
            FaultKind::NetworkDown => guest
                .is_some_and(|g| {
                    let routed = g.default_v4.is_some() || g.default_v6.is_some();
                    g.interfaces.iter().any(|i| {
                        i.name.as_str() == sub && i.up && i.carrier && !i.addresses.is_empty()
                    }) && (routed || self.net.routed.is_none())
                })
                .then_some("the guest's interface is up, addressed and routed again"),
            _ => guest
                .is_some()
                .then_some("the gateway answers and the TCP checks pass again"),
        }
    }
}
