//! The core's side of the control API: the socket, the per-connection
//! line reader, and the answer to each request.

use super::*;

impl Core {
    pub(super) fn view(&self, now: Millis, name: &str) -> Option<VmView> {
        let state = self.engine.state(name)?;
        let v = self.vms.get(name);
        let fault = self.engine.active_fault(name);
        Some(VmView {
            domain: name.to_string(),
            uuid: v.map(|v| v.uuid.clone()).unwrap_or_default(),
            state: state.name().to_string(),
            domain_state: self
                .engine
                .domain(name)
                .map(|d| d.to_string())
                .unwrap_or_else(|| "unknown".into()),
            agent_expected: v
                .and_then(|v| v.cfg.as_ref())
                .is_some_and(|c| c.agent.is_some()),
            agent_connected: v.is_some_and(|v| v.session.is_some()),
            heartbeat_age_ms: self
                .engine
                .last_heartbeat(name)
                .map(|t| now.saturating_sub(t)),
            fault: fault.map(|(_, k)| k.name().to_string()),
            fault_id: fault.map(|(id, _)| id),
            quarantine: self.engine.quarantine_reason(name).map(String::from),
            hostname: v
                .and_then(|v| v.session.as_ref())
                .map(|s| s.hostname.clone()),
            agent_version: v
                .and_then(|v| v.session.as_ref())
                .map(|s| s.agent_version.clone()),
            boot_id: v
                .and_then(|v| v.session.as_ref())
                .map(|s| s.boot_id.clone()),
        })
    }

    pub(super) fn on_control(
        &mut self,
        now: Millis,
        req: Request,
        reply: oneshot::Sender<Response>,
    ) {
        let known = |core: &Core, d: &str| core.engine.state(d).is_some();
        let resp = match req {
            Request::List => {
                let views: Vec<VmView> = self
                    .engine
                    .vms()
                    .filter_map(|(n, _)| self.view(now, n))
                    .collect();
                Response::ok(serde_json::json!({
                    "armed": self.engine.armed(),
                    "watchdog": self.self_state(now),
                    "vms": views,
                }))
            }
            Request::Status { domain } => match self.view(now, &domain) {
                Some(v) => {
                    let rt = self.vms.get(&domain);
                    let report = rt
                        .and_then(|v| v.last_report.as_ref())
                        .map(|r| super::network::snapshot_json(r));
                    let mut data = serde_json::to_value(v).unwrap_or_default();
                    data["watchdog"] = self.self_state(now);
                    data["last_report"] = report.unwrap_or_default();
                    data["vnics"] = rt
                        .and_then(|v| v.nics.as_ref())
                        .map(|n| serde_json::to_value(n).unwrap_or_default())
                        .unwrap_or_default();
                    Response::ok(data)
                }
                None => Response::err("not-found", format!("no monitored domain named {domain:?}")),
            },
            Request::Health { domain, resource } => {
                let by_resource = |r: &str| {
                    self.vms
                        .iter()
                        .find(|(_, v)| {
                            v.cfg
                                .as_ref()
                                .is_some_and(|c| c.cluster_resource.as_deref() == Some(r))
                        })
                        .map(|(n, _)| n.clone())
                };
                let name = match (domain, resource) {
                    (Some(d), None) => Some(d),
                    (None, Some(r)) => by_resource(&r),
                    _ => None,
                };
                match name.and_then(|n| Some((self.engine.verdict(now, &n)?, n))) {
                    Some(((ok, why), domain)) => Response::ok(serde_json::json!({
                        "domain": domain,
                        "ok": ok,
                        "why": why,
                    })),
                    None => {
                        Response::err("not-found", "no such monitored domain or cluster resource")
                    }
                }
            }
            Request::Probe { domain } => {
                if !known(self, &domain) {
                    Response::err("not-found", format!("no monitored domain named {domain:?}"))
                } else {
                    let tx = self
                        .vms
                        .get(&domain)
                        .and_then(VmRt::live_session)
                        .map(|s| s.tx.clone());
                    match tx {
                        None => {
                            Response::err("unavailable", format!("{domain} has no connected agent"))
                        }
                        Some(_) if !self.engine.may_talk_to(&domain) => Response::err(
                            "unavailable",
                            format!("{domain} is not running; nothing is sent to it"),
                        ),
                        Some(tx) => {
                            let id = self.next_probe;
                            self.next_probe = self.next_probe.wrapping_add(1).max(1);
                            if tx.try_send(Box::new(Message::Probe(Probe { id }))).is_err() {
                                Response::err("unavailable", "the agent's queue is full")
                            } else {
                                self.probes.insert(id, PendingProbe { reply });
                                let core = self.tx.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(5)).await;
                                    let _ = core.send(CoreMsg::RequestTimeout(id)).await;
                                });
                                return;
                            }
                        }
                    }
                }
            }
            Request::Events {
                since,
                after,
                limit,
            } => {
                let page = limit
                    .unwrap_or(crate::daemon::control::EVENTS_PAGE)
                    .clamp(1, crate::daemon::control::EVENTS_PAGE)
                    as usize;
                let r = match after {
                    Some(seq) => self.journal.after_page(seq, page),
                    None => self.journal.since_page(since.unwrap_or(0), page),
                };
                match r {
                    Ok(entries) => {
                        let rows: Vec<serde_json::Value> = entries
                            .into_iter()
                            .map(|e| serde_json::json!({ "seq": e.seq, "t": e.t, "record": e.record }))
                            .collect();
                        Response::ok(serde_json::Value::Array(rows))
                    }
                    Err(e) => Response::err("internal", format!("{e:#}")),
                }
            }
            Request::Warnings { domain } => {
                match domain.as_ref().filter(|d| self.engine.state(d).is_none()) {
                    Some(d) => {
                        Response::err("not-found", format!("no monitored domain named {d:?}"))
                    }
                    None => self.warnings_view(now, domain.as_deref()),
                }
            }
            Request::Advise { domain } => {
                return self.ask_advice(advise::Ask::Show { domain }, reply);
            }
            Request::AdviseApply {
                domain,
                items,
                live,
            } => {
                let ask = advise::Ask::Apply {
                    domain,
                    items,
                    live,
                };
                return self.ask_advice(ask, reply);
            }
            Request::AdviseRevert { domain, action } => {
                return self.ask_advice(advise::Ask::Revert { domain, action }, reply);
            }
            Request::Report { since } => match self.journal.since(0) {
                Ok(entries) => {
                    let from = since
                        .unwrap_or_else(|| entries.first().map_or(self.clock.started(), |e| e.t));
                    let recs: Vec<(Millis, Record)> =
                        entries.into_iter().map(|e| (e.t, e.record)).collect();
                    let mut m = crate::metrics::compute(&recs, from, now.max(from + 1));
                    // VMs that never faulted are still part of the report.
                    for (name, _) in self.engine.vms() {
                        if !m.iter().any(|x| x.vm == name) {
                            m.push(crate::metrics::VmMetrics::clean(name));
                        }
                    }
                    m.sort_by(|a, b| a.vm.cmp(&b.vm));
                    Response::ok(serde_json::json!({ "from": from, "to": now, "vms": m }))
                }
                Err(e) => Response::err("internal", format!("{e:#}")),
            },
            Request::Maintenance { domain, on, for_ms } => {
                if !known(self, &domain) {
                    Response::err("not-found", format!("no monitored domain named {domain:?}"))
                } else {
                    let cmd = if on {
                        engine::OperatorCommand::MaintenanceOn {
                            until: for_ms.map(|d| now + d),
                        }
                    } else {
                        engine::OperatorCommand::MaintenanceOff
                    };
                    self.step(now, &domain, Input::Operator(cmd));
                    Response::ok(
                        serde_json::json!({ "domain": domain, "state": self.engine.state(&domain).map(|s| s.name()) }),
                    )
                }
            }
            Request::Release { domain } => {
                if self.engine.state(&domain) != Some(State::Quarantined) {
                    if known(self, &domain) {
                        Response::err("usage", format!("{domain} is not quarantined"))
                    } else {
                        Response::err("not-found", format!("no monitored domain named {domain:?}"))
                    }
                } else {
                    self.step(
                        now,
                        &domain,
                        Input::Operator(engine::OperatorCommand::Release),
                    );
                    Response::ok(
                        serde_json::json!({ "domain": domain, "state": self.engine.state(&domain).map(|s| s.name()) }),
                    )
                }
            }
            Request::Act { domain, action } => {
                let kind = match ActionKind::operator(&action) {
                    Some(k) => k,
                    None => {
                        let msg = format!("unknown action {action:?} ({})", ActionKind::OPERATOR);
                        let _ = reply.send(Response::err("usage", msg));
                        return;
                    }
                };
                let resource = self
                    .vms
                    .get(&domain)
                    .and_then(|v| v.cfg.as_ref())
                    .and_then(|c| c.cluster_resource.clone())
                    .filter(|_| self.cfg.cluster.enabled());
                if !known(self, &domain) {
                    Response::err("not-found", format!("no monitored domain named {domain:?}"))
                } else if let Some(r) = resource
                    .filter(|_| !matches!(kind, ActionKind::AgentReboot | ActionKind::Resume))
                {
                    Response::err(
                        "usage",
                        format!(
                            "{domain} is cluster resource {r}: the cluster starts, stops and moves it (crm_resource / pcs resource), not vigild"
                        ),
                    )
                } else {
                    // An operator's action goes through the engine like
                    // everything else: journaled (intent first, outcome
                    // when it completes) and counted against the budgets;
                    // dispatched once its intent is durable.
                    let out = self.engine.step(
                        now,
                        &domain,
                        Input::Operator(engine::OperatorCommand::Act { kind }),
                    );
                    let id = out.actions.first().map_or(0, |a| a.id);
                    log::warn!("operator: {action} {domain} (action #{id})");
                    self.apply(now, out);
                    Response::ok(
                        serde_json::json!({ "domain": domain, "action": action, "id": id }),
                    )
                }
            }
            Request::Host { clear } => {
                if clear {
                    log::warn!("operator: host hardware and disk reasons cleared");
                    let out = self.engine.host_clear(now);
                    self.apply(now, out);
                }
                let host = self.engine.host();
                let reasons: Vec<serde_json::Value> = host
                    .reasons()
                    .map(|(name, r)| {
                        serde_json::json!({
                            "reason": name,
                            "health": r.health,
                            "since": r.since,
                            "until": r.until,
                            "why": r.why,
                        })
                    })
                    .collect();
                let faults: Vec<serde_json::Value> = self
                    .engine
                    .host_faults()
                    .into_iter()
                    .map(|(id, kind, subject, located)| {
                        serde_json::json!({
                            "id": id,
                            "kind": kind,
                            "layer": kind.layer().name(),
                            "subject": subject,
                            "located": located,
                        })
                    })
                    .collect();
                Response::ok(serde_json::json!({
                    "health": host.health(),
                    "reasons": reasons,
                    "faults": faults,
                    "hypervisor_answers": !self.engine.hypervisor_is_silent(),
                    "armed": self.engine.armed(),
                    "watchdog": self.self_state(now),
                }))
            }
            Request::Reload => self.reload(),
            Request::Config => match serde_json::to_value(&self.cfg) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::err("internal", e.to_string()),
            },
            Request::Disarm | Request::Arm => {
                let g = if matches!(req, Request::Disarm) {
                    engine::Global::Disarm
                } else {
                    engine::Global::Arm
                };
                log::warn!("operator: {g:?}");
                let out = self.engine.global(now, g);
                self.apply(now, out);
                Response::ok(serde_json::json!({ "armed": self.engine.armed() }))
            }
        };
        let _ = reply.send(resp);
    }
}

/// Bind the control socket: root-only (mode 0600), or with a control
/// group, 0660 and that group (what each member may do is checked per
/// request, see [`Access`]).
pub fn control_listener(path: &Path, group: &str) -> anyhow::Result<(UnixListener, Access)> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let gid = match group {
        "" => None,
        g => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .with_context(|| format!("control_group {g:?}: no such group"))?
                .gid,
        ),
    };
    let l = vigil_protocol::transport::bind_unix(path)?;
    let mode = match gid {
        Some(g) => {
            nix::unistd::chown(path, None, Some(g))
                .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    l.set_nonblocking(true)?;
    let access = Access {
        group: gid.map(|g| g.as_raw()),
        owner: nix::unistd::geteuid().as_raw(),
    };
    Ok((UnixListener::from_std(l)?, access))
}

/// Longest request line accepted on the control socket.
const MAX_REQUEST: usize = 64 * 1024;

/// Serve control connections: one JSON request per line, one JSON reply per line.
pub async fn serve_control(listener: UnixListener, core: mpsc::Sender<CoreMsg>, access: Access) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(control_connection(stream, core.clone(), access));
    }
}

/// May this connection's peer send `req`? Asked of the socket
/// (`SO_PEERCRED`) for each request.
fn permitted(stream: &UnixStream, access: Access, req: &Request) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("permission denied: the peer's credentials: {e}"))?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    };
    let groups = peer
        .pid
        .map(|p| supplementary_groups(Path::new("/proc"), p))
        .unwrap_or_default();
    let r = access.check(peer, &groups, req);
    if let Err(e) = &r {
        log::warn!("control: uid {} pid {:?}: {e}", peer.uid, peer.pid);
    }
    r
}

async fn control_connection(stream: UnixStream, core: mpsc::Sender<CoreMsg>, access: Access) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(MAX_REQUEST as u64 * 64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let resp = if line.len() > MAX_REQUEST {
            Response::err("usage", "request too long")
        } else {
            match serde_json::from_str::<Request>(&line) {
                Err(e) => Response::err("usage", format!("bad request: {e}")),
                Ok(req) => {
                    let sock: &UnixStream = lines.get_ref().get_ref().get_ref().as_ref();
                    match permitted(sock, access, &req) {
                        Err(e) => Response::err("denied", e),
                        Ok(()) => {
                            let (tx, rx) = oneshot::channel();
                            if core.send(CoreMsg::Control(req, tx)).await.is_err() {
                                return;
                            }
                            rx.await
                                .unwrap_or_else(|_| Response::err("internal", "no reply"))
                        }
                    }
                }
            }
        };
        let mut text = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if wr.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Core {
    /// Open warnings of `domain` (all VMs when none).
    fn warnings_view(&self, now: Millis, domain: Option<&str>) -> Response {
        let warnings: Vec<serde_json::Value> = self
            .engine
            .vms()
            .filter(|(n, _)| domain.is_none_or(|d| d == *n))
            .flat_map(|(n, _)| {
                self.engine.warnings(n).into_iter().map(move |w| {
                    let mut v = serde_json::to_value(&w).unwrap_or_default();
                    v["domain"] = n.into();
                    v
                })
            })
            .collect();
        Response::ok(serde_json::json!({ "now": now, "warnings": warnings }))
    }
}
