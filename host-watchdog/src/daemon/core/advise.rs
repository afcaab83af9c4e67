//! `vigilctl advise`: the core gathers each VM's facts (its journal over
//! the advisor's window, open warnings, last report, heartbeat spread),
//! asks the backend thread for its size, and answers with the advisor's
//! recommendations; `--apply` and `--revert` resize through the engine
//! (journaled as a `reconfigure` action with before and after).

use super::*;
use crate::advisor::{self, Advice, Facts};
use crate::backend::Sizing;
use crate::engine::Resize;

/// Advice requests waiting for sizes, at most.
const MAX_WAITING: usize = 16;

/// What was asked.
pub(crate) enum Ask {
    /// Recommendations for one VM or all.
    Show { domain: Option<String> },
    /// Apply a VM's applicable recommendations (all, or those named).
    Apply {
        domain: String,
        items: Vec<String>,
        live: bool,
    },
    /// Undo a reconfigure action.
    Revert { domain: String, action: u64 },
}

impl Core {
    /// Ask the backend for the sizes the answer needs; it comes back as
    /// `CoreMsg::Sizing`.
    pub(super) fn ask_advice(&mut self, ask: Ask, reply: oneshot::Sender<Response>) {
        let vms: Vec<String> = match &ask {
            Ask::Show { domain: None } => self.engine.vms().map(|(n, _)| n.to_string()).collect(),
            Ask::Show { domain: Some(d) }
            | Ask::Apply { domain: d, .. }
            | Ask::Revert { domain: d, .. } => {
                if self.engine.state(d).is_none() {
                    let _ = reply.send(Response::err(
                        "not-found",
                        format!("no monitored domain named {d:?}"),
                    ));
                    return;
                }
                vec![d.clone()]
            }
        };
        if self.advising.len() >= MAX_WAITING {
            let _ = reply.send(Response::err(
                "unavailable",
                "too many advice requests waiting for libvirt",
            ));
            return;
        }
        self.next_advice += 1;
        let token = self.next_advice;
        self.advising.insert(token, (ask, reply));
        let _ = self.backend.send(BackendReq::Sizing { token, vms });
    }

    /// The sizes came: answer.
    pub(super) fn on_sizing(
        &mut self,
        now: Millis,
        token: u64,
        sizes: Vec<(String, Result<Sizing, String>)>,
    ) {
        let Some((ask, reply)) = self.advising.remove(&token) else {
            return;
        };
        let resp = match self.answer(now, ask, sizes) {
            Ok(v) => Response::ok(v),
            Err((class, msg)) => Response::err(class, msg),
        };
        let _ = reply.send(resp);
    }

    fn answer(
        &mut self,
        now: Millis,
        ask: Ask,
        sizes: Vec<(String, Result<Sizing, String>)>,
    ) -> Result<serde_json::Value, (&'static str, String)> {
        let window = self.cfg.advisor.window_ms;
        let history: Vec<(Millis, Record)> = self
            .journal
            .since(now.saturating_sub(window))
            .map_err(|e| ("internal", format!("journal: {e}")))?
            .into_iter()
            .map(|e| (e.t, e.record))
            .collect();
        let advice_of = |core: &Core, vm: &str, sizing: Sizing| -> Vec<Advice> {
            let mine: Vec<(Millis, Record)> = history
                .iter()
                .filter(|(_, r)| crate::journal::vm_of(r) == vm)
                .cloned()
                .collect();
            let warnings = core.engine.warnings(vm);
            let facts = Facts {
                vm,
                sizing,
                history: &mine,
                warnings: &warnings,
                last: core.vms.get(vm).and_then(|v| v.last_report.as_deref()),
                heartbeat: core.engine.heartbeat_spread(vm),
            };
            advisor::advise(&facts, &core.cfg.advisor)
        };
        match ask {
            Ask::Show { .. } => {
                let vms: Vec<serde_json::Value> = sizes
                    .into_iter()
                    .map(|(vm, s)| match s {
                        Ok(sizing) => serde_json::json!({
                            "domain": vm,
                            "sizing": sizing,
                            "advice": advice_of(self, &vm, sizing),
                        }),
                        Err(e) => serde_json::json!({ "domain": vm, "error": e }),
                    })
                    .collect();
                Ok(serde_json::json!({ "vms": vms }))
            }
            Ask::Apply {
                domain,
                items,
                live,
            } => {
                let sizing = one(sizes)?;
                self.may_resize(&domain)?;
                let advice = advice_of(self, &domain, sizing);
                let applicable: Vec<&Advice> =
                    advice.iter().filter(|a| a.resize.is_some()).collect();
                let names = || {
                    applicable
                        .iter()
                        .map(|a| a.item.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                for i in &items {
                    if !applicable.iter().any(|a| &a.item == i) {
                        return Err((
                            "usage",
                            format!(
                                "{domain}: no applicable recommendation {i:?} (applicable now: {})",
                                if applicable.is_empty() {
                                    "none".into()
                                } else {
                                    names()
                                }
                            ),
                        ));
                    }
                }
                let mut r = Resize {
                    memory_kib: None,
                    vcpus: None,
                    live,
                };
                for a in applicable
                    .iter()
                    .filter(|a| items.is_empty() || items.contains(&a.item))
                {
                    if let Some(x) = &a.resize {
                        r.memory_kib = r.memory_kib.or(x.memory_kib);
                        r.vcpus = r.vcpus.or(x.vcpus);
                    }
                }
                if r.memory_kib.is_none() && r.vcpus.is_none() {
                    return Err((
                        "usage",
                        format!("{domain}: nothing to apply (no applicable recommendation)"),
                    ));
                }
                Ok(self.reconfigure(now, &domain, r, None))
            }
            Ask::Revert { domain, action } => {
                let sizing = one(sizes)?;
                self.may_resize(&domain)?;
                let done = self.reconfigured(&domain, action)?;
                // Only what that action set, and only if nothing changed it
                // since: a revert never clobbers a later change.
                if let Some((_, after)) = done.memory_kib.filter(|(_, a)| *a != sizing.memory_kib) {
                    return Err(("usage", format!(
                        "{domain}: memory is {} KiB now, not the {after} KiB action #{action} set: changed since, not reverted",
                        sizing.memory_kib
                    )));
                }
                if let Some((_, after)) = done.vcpus.filter(|(_, a)| *a != sizing.vcpus) {
                    return Err(("usage", format!(
                        "{domain}: {} vCPUs now, not the {after} action #{action} set: changed since, not reverted",
                        sizing.vcpus
                    )));
                }
                Ok(self.reconfigure(now, &domain, done.inverse(), Some(action)))
            }
        }
    }

    /// A resize is the operator's, at a quiet time: not while the VM is
    /// faulted, being recovered or in maintenance.
    fn may_resize(&self, domain: &str) -> Result<(), (&'static str, String)> {
        match self.engine.state(domain) {
            Some(State::Healthy | State::Off) => Ok(()),
            Some(s) => Err((
                "unavailable",
                format!("{domain} is in state {s}: resize it once it is healthy (or off)"),
            )),
            None => Err(("not-found", format!("no monitored domain named {domain:?}"))),
        }
    }

    /// The resize a successful reconfigure action of `domain` made.
    fn reconfigured(&self, domain: &str, action: u64) -> Result<Resize, (&'static str, String)> {
        let entries = self
            .journal
            .since(0)
            .map_err(|e| ("internal", format!("journal: {e}")))?;
        let resize = entries.iter().find_map(|e| match &e.record {
            Record::Intent { vm, action: a, .. } if vm == domain && a.id == action => {
                match &a.kind {
                    ActionKind::Reconfigure(r) => Some(r.clone()),
                    _ => None,
                }
            }
            _ => None,
        });
        let ok = entries.iter().any(|e| {
            matches!(&e.record, Record::Outcome { vm, id, ok: true, .. } if vm == domain && *id == action)
        });
        match resize {
            Some(r) if ok => Ok(r),
            Some(_) => Err((
                "usage",
                format!("{domain}: action #{action} did not succeed; nothing to revert"),
            )),
            None => Err((
                "not-found",
                format!("{domain}: no reconfigure action #{action} in the journal"),
            )),
        }
    }

    /// Resize through the engine: journaled (intent first), dispatched
    /// once durable.
    fn reconfigure(
        &mut self,
        now: Millis,
        domain: &str,
        r: Resize,
        reverts: Option<u64>,
    ) -> serde_json::Value {
        let out = self.engine.step(
            now,
            domain,
            Input::Operator(engine::OperatorCommand::Act {
                kind: ActionKind::Reconfigure(r.clone()),
            }),
        );
        let id = out.actions.first().map_or(0, |a| a.id);
        match reverts {
            Some(a) => log::warn!("operator: revert of #{a} on {domain}: {r} (action #{id})"),
            None => log::warn!("operator: advice applied to {domain}: {r} (action #{id})"),
        }
        self.apply(now, out);
        serde_json::json!({ "domain": domain, "action": id, "resize": r, "reverts": reverts })
    }
}

/// The one VM's size.
fn one(sizes: Vec<(String, Result<Sizing, String>)>) -> Result<Sizing, (&'static str, String)> {
    match sizes.into_iter().next() {
        Some((_, Ok(s))) => Ok(s),
        Some((vm, Err(e))) => Err(("unavailable", format!("{vm}: cannot read its size: {e}"))),
        None => Err(("internal", "no size came back".into())),
    }
}
