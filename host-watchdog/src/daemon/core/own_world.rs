//! The core's side of vigild's own world: the config it reloads, the
//! journal it found damaged, and whether the hypervisor answers.

use super::*;

impl Core {
    /// The journal found damaged at start was moved there (shown in
    /// `status`).
    pub fn journal_moved_aside(&mut self, moved: Option<(std::path::PathBuf, String)>) {
        self.journal_moved = moved;
    }

    /// Where `reload` reads the config from.
    pub fn config_source(&mut self, source: Option<crate::config::ConfigSource>) {
        self.source = source;
    }

    /// Read the config again: a bad one changes nothing; a good one is
    /// applied where it can be (see [`crate::config::Reload`]).
    pub(super) fn reload(&mut self) -> Response {
        let Some(source) = self.source.clone() else {
            return Response::err("unavailable", "vigild was not started from a config file");
        };
        let result = |r: &str| crate::daemon::metrics::ResultLabels { result: r.into() };
        let new = match source.load() {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&result("rejected"))
                    .inc();
                log::error!("config not reloaded: {e}; the running config stays");
                return Response::err(
                    "usage",
                    format!("config not reloaded: {e}; the running config stays"),
                );
            }
        };
        let r = self.cfg.reload(new);
        self.engine.set_config(r.config.engine.clone());
        for v in self.vms.values_mut() {
            v.cfg = None;
        }
        for v in &r.config.vm {
            self.vms.entry(v.domain.clone()).or_default().cfg = Some(v.clone());
        }
        self.cfg = r.config;
        self.metrics.reloads.get_or_create(&result("ok")).inc();
        log::warn!(
            "config reloaded from {}: changed {:?}{}",
            source.path.display(),
            r.applied,
            if r.needs_restart.is_empty() {
                String::new()
            } else {
                format!(
                    "; these take a restart and keep their running values: {:?}",
                    r.needs_restart
                )
            }
        );
        Response::ok(serde_json::json!({
            "path": source.path,
            "applied": r.applied,
            "needs_restart": r.needs_restart,
        }))
    }

    /// The backend thread's libvirt calls: whether the hypervisor answers.
    pub fn hypervisor_watch(&self) -> Arc<super::super::hv_watch::CallWatch> {
        self.hv_watch.clone()
    }

    /// Watch these calls (the backend thread marks them).
    pub fn watch_hypervisor(&mut self, watch: Arc<super::super::hv_watch::CallWatch>) {
        self.hv_watch = watch;
    }

    pub(super) fn judge_hypervisor(&mut self, now: Millis) {
        let bound = self.cfg.hypervisor_timeout_ms;
        let stuck = self
            .hv_watch
            .since()
            .map(|t| now.saturating_sub(t))
            .filter(|d| *d >= bound);
        // A lost connection is judged at once: vigild is blind from the
        // moment it is seen (and its calls would fail).
        let lost = self.hv_watch.lost_since().map(|t| now.saturating_sub(t));
        self.metrics
            .hypervisor_connected
            .set(i64::from(lost.is_none()));
        let silent = self.engine.hypervisor_is_silent();
        let g = match (lost, stuck) {
            (Some(for_ms), _) if !silent => engine::Global::HypervisorSilent { for_ms, lost: true },
            (None, Some(for_ms)) if !silent && now >= self.hv_judged_from => {
                log::error!(
                    "the hypervisor does not answer: a libvirt call has not returned for {for_ms} ms; \
                     no destructive action until it does"
                );
                engine::Global::HypervisorSilent {
                    for_ms,
                    lost: false,
                }
            }
            (None, None) if silent => {
                log::warn!("the hypervisor answers again");
                engine::Global::HypervisorAnswers
            }
            _ => return,
        };
        let out = self.engine.global(now, g);
        self.apply(now, out);
    }
}
