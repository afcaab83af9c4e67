//! What one report finds, per warning kind: the filesystems' and memory's
//! trends, OOM kills and service restarts counted over their windows, CPU
//! pressure and steal held over time.

use vigil_protocol::snapshot::WatchTarget;

use super::*;
use crate::engine::trend::words;

impl Trends {
    pub(super) fn filesystems(
        &mut self,
        now: Millis,
        s: &Snapshot,
        cfg: &WarnConfig,
        (space_pct, inode_pct): (u8, u8),
        found: &mut Found,
    ) {
        let fit = cfg.fit();
        let listed: Vec<&str> = s
            .filesystems
            .iter()
            .filter(|f| !f.read_only && f.size_bytes > 0)
            .map(|f| f.mount_point.as_str())
            .collect();
        self.fs.retain(|m, _| listed.contains(&m.as_str()));
        for f in s
            .filesystems
            .iter()
            .filter(|f| !f.read_only && f.size_bytes > 0)
        {
            let mount = f.mount_point.as_str().to_string();
            let t = self.fs.entry(mount.clone()).or_default();
            let used = f.size_bytes.saturating_sub(f.avail_bytes) as f64;
            let inodes = f.inodes_total.saturating_sub(f.inodes_free) as f64;
            // A delete (a drop of more than 1 %) starts the trend over.
            if t.space
                .last()
                .is_some_and(|u| u > used + f.size_bytes as f64 / 100.0)
            {
                t.space.clear();
            }
            if t.inodes
                .last()
                .is_some_and(|u| u > inodes + f.inodes_total as f64 / 100.0)
            {
                t.inodes.clear();
            }
            push_spaced(&mut t.space, now, used, fit);
            let level = |total: u64, pct: u8| total as f64 * f64::from(pct) / 100.0;
            let space = predicted(
                &t.space,
                used,
                level(f.size_bytes, space_pct),
                cfg,
                self.open
                    .contains_key(&(WarningKind::PredictedFull, Some(mount.clone()))),
                now,
            )
            .map(|(eta, rate)| {
                (
                    format!(
                        "{mount} fills at {}/h ({:.1}% used, {} MiB free): full in {}",
                        mib(rate * 3_600_000.0),
                        100.0 * used / f.size_bytes as f64,
                        f.avail_bytes >> 20,
                        words(eta - now)
                    ),
                    Some(eta),
                )
            });
            found.push((
                (WarningKind::PredictedFull, Some(mount.clone())),
                space,
                "no longer filling towards full within the horizon",
            ));
            if f.inodes_total == 0 {
                continue;
            }
            push_spaced(&mut t.inodes, now, inodes, fit);
            let key = (WarningKind::InodesPredictedFull, Some(mount.clone()));
            let open = self.open.contains_key(&key);
            let inode = predicted(
                &t.inodes,
                inodes,
                level(f.inodes_total, inode_pct),
                cfg,
                open,
                now,
            )
            .map(|(eta, rate)| {
                (
                    format!(
                        "{mount} uses {:.0} inodes/h ({} of {} free): out of inodes in {}",
                        rate * 3_600_000.0,
                        f.inodes_free,
                        f.inodes_total,
                        words(eta - now)
                    ),
                    Some(eta),
                )
            });
            found.push((
                key,
                inode,
                "no longer using inodes towards exhaustion within the horizon",
            ));
        }
    }

    pub(super) fn memory(&mut self, now: Millis, s: &Snapshot, cfg: &WarnConfig) -> Finding {
        let m = s.memory.as_ref()?;
        let total = m.total_bytes.saturating_add(m.swap_total_bytes) as f64;
        let used = total - m.available_bytes.saturating_add(m.swap_free_bytes) as f64;
        // A drop of a tenth (a process gone) starts the trend over.
        if self.memory.last().is_some_and(|u| u > used + total / 10.0) {
            self.memory.clear();
        }
        push_spaced(&mut self.memory, now, used, cfg.fit());
        let open = self.open.contains_key(&(WarningKind::MemoryGrowth, None));
        // Exhausted: 2 % of memory and swap left.
        let (eta, rate) = predicted(&self.memory, used, total * 0.98, cfg, open, now)?;
        Some((
            format!(
                "memory use grows {}/h ({} MiB available, swap included): exhausted in {}",
                mib(rate * 3_600_000.0),
                (total - used) as u64 >> 20,
                words(eta - now)
            ),
            Some(eta),
        ))
    }

    pub(super) fn oom(&mut self, now: Millis, s: &Snapshot, cfg: &WarnConfig) -> Finding {
        if let Some(total) = s.memory.as_ref().and_then(|m| m.oom_kills) {
            self.ooms.take(now, total);
        }
        let n = self.ooms.within(now, cfg.oom_window_ms);
        let open = self.open.contains_key(&(WarningKind::RecurringOom, None));
        // Raised at the count; held while any kill is within the window.
        if n >= cfg.oom_kills as usize || (open && n > 0) {
            Some((
                format!("{n} OOM kills in the last {}", words(cfg.oom_window_ms)),
                None,
            ))
        } else {
            None
        }
    }

    pub(super) fn cpu(
        &mut self,
        now: Millis,
        s: &Snapshot,
        cfg: &WarnConfig,
    ) -> (Finding, Finding) {
        let pressure = s
            .pressure
            .as_ref()
            .and_then(|p| p.cpu.as_ref())
            .map(|c| c.some.avg60);
        let steal = s.cpu.as_ref().map(|c| u32::from(c.steal));
        let pct = |v: u32| format!("{}.{:02}%", v / 100, v % 100);
        let held = |for_ms: Option<Millis>, what: String| {
            for_ms
                .filter(|ms| *ms >= cfg.sustained_ms)
                .map(|ms| (format!("{what} for {}", words(ms)), None))
        };
        let p = self.pressure.take(now, pressure, cfg.cpu_pressure_avg60);
        let st = self.steal.take(now, steal, cfg.cpu_steal);
        (
            held(
                p,
                format!(
                    "CPU pressure (some avg60) {} (mark {})",
                    pct(pressure.unwrap_or(0)),
                    pct(cfg.cpu_pressure_avg60)
                ),
            ),
            held(
                st,
                format!(
                    "CPU steal {} (mark {})",
                    pct(steal.unwrap_or(0)),
                    pct(cfg.cpu_steal)
                ),
            ),
        )
    }

    pub(super) fn services(
        &mut self,
        now: Millis,
        s: &Snapshot,
        cfg: &WarnConfig,
        found: &mut Found,
    ) {
        let name = |t: &WatchTarget| match t {
            WatchTarget::Process(n) | WatchTarget::Unit(n) => n.as_str().to_string(),
        };
        let listed: Vec<String> = s.watched.iter().map(|w| name(&w.target)).collect();
        self.services.retain(|n, _| listed.contains(n));
        for w in &s.watched {
            let n = name(&w.target);
            let key = (WarningKind::ServiceFlapping, Some(n.clone()));
            let open = self.open.contains_key(&key);
            let c = self.services.entry(n.clone()).or_default();
            c.take(now, u64::from(w.restarts));
            let k = c.within(now, cfg.flap_window_ms);
            let finding = (k >= cfg.service_restarts as usize || (open && k > 0)).then(|| {
                (
                    format!(
                        "{n} restarted {k} times in the last {}",
                        words(cfg.flap_window_ms)
                    ),
                    None,
                )
            });
            found.push((key, finding, "no restart within the window"));
        }
    }
}

/// Add a sample unless the last is closer than the window's share of the
/// samples kept (so the window is covered whatever the report rate).
fn push_spaced(s: &mut Series, now: Millis, v: f64, fit: Fit) {
    let gap = fit.window_ms / fit.max_samples as Millis;
    if s.newest().is_none_or(|t| now.saturating_sub(t) >= gap) {
        s.push(now, v, fit);
    }
}

/// When (host time) `now`'s value reaches `level` at the fitted rate, and
/// the rate per ms: within the horizon to raise, within twice it to hold.
fn predicted(
    s: &Series,
    now_value: f64,
    level: f64,
    cfg: &WarnConfig,
    open: bool,
    now: Millis,
) -> Option<(Millis, f64)> {
    if cfg.horizon_ms == 0 || now_value >= level {
        // Reached: a fault's turn, not a warning's.
        return None;
    }
    let fit = cfg.fit();
    let rate = s.rate(fit).filter(|r| *r > 0.0)?;
    // Noise is no trend: over its span the fit must have moved at least
    // 1 % of the level (a file or two among 512 inodes, a daemon starting
    // in a small guest, are not).
    if rate * (s.span() as f64) < level / 100.0 {
        return None;
    }
    let ms = ((level - now_value) / rate) as Millis;
    let bound = if open {
        2 * cfg.horizon_ms
    } else {
        cfg.horizon_ms
    };
    (ms <= bound).then_some((now + ms, rate))
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
}
