//! Memory, swap, OOM kills, pressure (PSI), load and CPU utilisation.

use std::path::Path;

use procfs::{FromRead, LoadAverage, Meminfo};
use vigil_protocol::snapshot::{Cpu, Memory, Pressure, PsiLine, PsiResource};

/// Memory from `meminfo` and `vmstat` under `proc_root`.
pub fn memory(proc_root: &Path) -> Result<Memory, String> {
    let m = Meminfo::from_file(proc_root.join("meminfo")).map_err(|e| format!("meminfo: {e}"))?;
    let oom_kills = std::fs::read_to_string(proc_root.join("vmstat"))
        .ok()
        .and_then(|t| vmstat_value(&t, "oom_kill"));
    Ok(Memory {
        total_bytes: m.mem_total,
        // Kernels before 3.14 lack MemAvailable: free + cached is the usual estimate.
        available_bytes: m.mem_available.unwrap_or(m.mem_free + m.cached),
        swap_total_bytes: m.swap_total,
        swap_free_bytes: m.swap_free,
        oom_kills,
    })
}

/// One counter from vmstat text: pure.
pub fn vmstat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `12.34` → 1234 without going through floats: pure.
fn hundredths(s: &str) -> Option<u32> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac2: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(int.parse::<u32>().ok()?.checked_mul(100)? + frac2.parse::<u32>().ok()?)
}

/// Parse one `/proc/pressure/*` file: pure.
pub fn parse_psi(text: &str) -> Option<PsiResource> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let which = parts.next()?;
        let mut psi = PsiLine::default();
        for kv in parts {
            let (k, v) = kv.split_once('=')?;
            match k {
                "avg10" => psi.avg10 = hundredths(v)?,
                "avg60" => psi.avg60 = hundredths(v)?,
                "total" => psi.total_us = v.parse().ok()?,
                _ => {}
            }
        }
        match which {
            "some" => some = Some(psi),
            "full" => full = Some(psi),
            _ => {}
        }
    }
    Some(PsiResource { some: some?, full })
}

/// PSI for cpu, memory and io; `None` when the kernel has no PSI.
pub fn pressure(proc_root: &Path) -> Option<Pressure> {
    let read = |name| {
        std::fs::read_to_string(proc_root.join("pressure").join(name))
            .ok()
            .and_then(|t| parse_psi(&t))
    };
    let p = Pressure {
        cpu: read("cpu"),
        memory: read("memory"),
        io: read("io"),
    };
    (p.cpu.is_some() || p.memory.is_some() || p.io.is_some()).then_some(p)
}

/// CPU tick counters from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks {
    /// All ticks.
    pub total: u64,
    /// Idle ticks (not including iowait).
    pub idle: u64,
    /// iowait ticks.
    pub iowait: u64,
    /// Steal ticks.
    pub steal: u64,
}

/// Parse the aggregate `cpu` line of `/proc/stat` and count `cpuN` lines: pure.
pub fn parse_stat(text: &str) -> Option<(Ticks, u16)> {
    let mut ticks = None;
    let mut cpus = 0u16;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            let get = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest counted in user)
            ticks = Some(Ticks {
                total: (0..8).map(get).sum(),
                idle: get(3),
                iowait: get(4),
                steal: get(7),
            });
        } else if line.starts_with("cpu") {
            cpus = cpus.saturating_add(1);
        }
    }
    Some((ticks?, cpus.max(1)))
}

/// Busy/iowait/steal shares between two samples, in hundredths of a percent: pure.
pub fn shares(prev: Ticks, now: Ticks) -> (u16, u16, u16) {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return (0, 0, 0);
    }
    let part = |x: u64| (x.saturating_mul(10_000) / total).min(10_000) as u16;
    let idle = now.idle.saturating_sub(prev.idle) + now.iowait.saturating_sub(prev.iowait);
    (
        part(total.saturating_sub(idle)),
        part(now.iowait.saturating_sub(prev.iowait)),
        part(now.steal.saturating_sub(prev.steal)),
    )
}

/// Load and CPU; `prev` holds the previous sample and is updated.
pub fn cpu(proc_root: &Path, prev: &mut Option<Ticks>) -> Result<Cpu, String> {
    let load =
        LoadAverage::from_file(proc_root.join("loadavg")).map_err(|e| format!("loadavg: {e}"))?;
    let text = std::fs::read_to_string(proc_root.join("stat")).map_err(|e| format!("stat: {e}"))?;
    let (ticks, cpus) = parse_stat(&text).ok_or("stat: no cpu line")?;
    let (busy, iowait, steal) = prev.map(|p| shares(p, ticks)).unwrap_or_default();
    *prev = Some(ticks);
    let x100 = |f: f32| (f * 100.0).round().clamp(0.0, u32::MAX as f32) as u32;
    Ok(Cpu {
        load1: x100(load.one),
        load5: x100(load.five),
        load15: x100(load.fifteen),
        cpus,
        busy,
        iowait,
        steal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_parses_to_hundredths() {
        let text = "some avg10=12.34 avg60=0.05 avg300=0.00 total=123456\nfull avg10=1.50 avg60=0.00 avg300=0.00 total=99\n";
        let r = parse_psi(text).unwrap();
        assert_eq!(
            r.some,
            PsiLine {
                avg10: 1234,
                avg60: 5,
                total_us: 123456
            }
        );
        assert_eq!(
            r.full,
            Some(PsiLine {
                avg10: 150,
                avg60: 0,
                total_us: 99
            })
        );
        assert_eq!(parse_psi("some avg10=x").map(|_| ()), None);
    }

    #[test]
    fn stat_and_shares() {
        let a = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\nintr 1\n";
        let b = "cpu  200 0 200 1400 100 0 0 100 0 0\ncpu0 1\ncpu1 1\n";
        let (ta, n) = parse_stat(a).unwrap();
        let (tb, _) = parse_stat(b).unwrap();
        assert_eq!(n, 2);
        // delta: total 1000, idle 600 + iowait 100 → busy 30%, iowait 10%, steal 10%.
        assert_eq!(shares(ta, tb), (3000, 1000, 1000));
    }

    #[test]
    fn memory_from_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal:        2048000 kB\nMemFree:          100000 kB\nMemAvailable:     512000 kB\nBuffers: 0 kB\nCached: 1000 kB\nSwapCached: 0 kB\nActive: 0 kB\nInactive: 0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nDirty: 0 kB\nWriteback: 0 kB\nMapped: 0 kB\nShmem: 0 kB\nSlab: 0 kB\nCommitLimit: 0 kB\nCommitted_AS: 0 kB\nVmallocTotal: 0 kB\nVmallocUsed: 0 kB\nVmallocChunk: 0 kB\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("vmstat"), "nr_free_pages 1\noom_kill 3\n").unwrap();
        let m = memory(dir.path()).unwrap();
        assert_eq!(m.total_bytes, 2048000 * 1024);
        assert_eq!(m.available_bytes, 512000 * 1024);
        assert_eq!(m.oom_kills, Some(3));
        assert!(memory(&dir.path().join("nope")).is_err());
    }
}
