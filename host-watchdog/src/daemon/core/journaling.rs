//! The core's side of the journal writer: each step's records go to the
//! writer thread, its actions wait until they are durable; answers,
//! outages and the writer's stop.

use super::*;

impl Core {
    /// vigild's own world as control answers show it: whether it acts,
    /// sees the hypervisor, and can make its records durable.
    pub(super) fn self_state(&self, now: Millis) -> serde_json::Value {
        let lost = self.hv_watch.lost_since();
        let hypervisor = match (lost, self.engine.hypervisor_is_silent()) {
            (Some(t), _) => serde_json::json!({
                "ok": false,
                "state": "connection lost",
                "for_ms": now.saturating_sub(t),
            }),
            (None, true) => serde_json::json!({ "ok": false, "state": "not answering" }),
            (None, false) => serde_json::json!({ "ok": true, "state": "connected" }),
        };
        let journal = match self.journal_down_since {
            Some(t) => serde_json::json!({
                "ok": false,
                "state": "refusing writes",
                "for_ms": now.saturating_sub(t),
                "error": self.journal_error,
                "unwritten_records": self.journal_waiting,
                "actions_held": self.held.len(),
            }),
            None => serde_json::json!({ "ok": true, "state": "writable" }),
        };
        let mut journal = journal;
        if let Some((aside, why)) = &self.journal_moved {
            journal["moved_aside"] = serde_json::json!({ "to": aside, "why": why });
        }
        serde_json::json!({
            "armed": self.engine.armed(),
            "hypervisor": hypervisor,
            "journal": journal,
        })
    }

    /// Journal first (durably), then dispatch the actions: the records go
    /// to the writer thread, and each action waits until its step's
    /// records are durable. When the journal cannot be written (disk
    /// full, locked by another process) the writer keeps the records in
    /// order and tries again every tick; the actions wait meanwhile: none
    /// is taken unrecorded, none is called failed for it (the ladder would
    /// climb on a fault that is not the action's).
    pub(super) fn apply(&mut self, now: Millis, out: Output) {
        if out.records.is_empty() && out.actions.is_empty() {
            return;
        }
        for r in &out.records {
            self.observe_record(r);
            self.uptime.observe(now, r);
        }
        let batch = if out.records.is_empty() {
            self.last_batch
        } else {
            self.last_batch += 1;
            let b = self.last_batch;
            self.request(
                WriteReq::Write {
                    t: now,
                    records: out.records,
                },
                Some(b),
            );
            b
        };
        for a in out.actions {
            if a.kind == ActionKind::LivenessProbe {
                self.liveness_probe(&a.vm);
            } else {
                self.held.push_back((batch, now, a));
            }
        }
        self.release();
    }

    pub(super) fn request(&mut self, req: WriteReq, batch: Option<u64>) {
        match &self.writer {
            Some(w) if w.send(req).is_ok() => self.unanswered.push_back(batch),
            _ => log::error!("journal writer gone: request dropped"),
        }
    }

    /// Dispatch the actions whose intents are durable, in order.
    pub(super) fn release(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(b, _, _)| *b <= self.durable_batch)
        {
            if let Some((_, t, a)) = self.held.pop_front() {
                self.dispatch(t, a);
            }
        }
    }

    pub(super) fn on_written(&mut self, now: Millis, w: Written) {
        for _ in 0..w.handled {
            if let Some(Some(b)) = self.unanswered.pop_front() {
                self.answered_batch = self.answered_batch.max(b);
            }
        }
        self.journal_waiting = w.waiting;
        match w.result {
            Ok(()) => {
                self.durable_batch = self.answered_batch;
                if let Some(since) = self.journal_down_since.take() {
                    log::warn!(
                        "journal writable again after {} ms: waiting records written, {} actions released",
                        now.saturating_sub(since),
                        self.held.len()
                    );
                }
            }
            Err(e) => {
                if self.journal_down_since.is_none() {
                    self.journal_down_since = Some(now);
                    log::error!(
                        "journal write failed: {e}; records are kept and retried, actions wait until their intents are durable"
                    );
                }
                self.journal_error = e;
            }
        }
        if w.dropped > 0 {
            log::error!(
                "journal down: {} records dropped (more than {} waiting); waiting actions given up",
                w.dropped,
                crate::daemon::writer::MAX_UNWRITTEN
            );
            for (_, _, a) in std::mem::take(&mut self.held) {
                self.done(
                    a.id,
                    &a.vm,
                    false,
                    "journal unavailable: intent not recorded",
                );
            }
        }
        match w.pruned {
            Some(Ok(0)) | None => {}
            Some(Ok(n)) => log::info!("journal: {n} records past the retention deleted"),
            Some(Err(e)) => log::warn!("journal: pruning failed: {e}"),
        }
        self.release();
    }

    /// Let the writer finish what was asked (at most 5 s), then stop it.
    pub(super) fn stop_writer(&mut self) {
        self.writer = None;
        if let Some(h) = self.writer_thread.take() {
            let until = std::time::Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                log::error!("journal writer did not finish in 5 s");
            }
        }
    }
}
