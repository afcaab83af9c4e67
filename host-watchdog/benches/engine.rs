//! Engine throughput: 1,000 VMs' heartbeats (500 ms interval) plus a 100 ms
//! tick through the engine on a virtual clock. Prints ns per heartbeat
//! observation and ns per per-VM tick decision. Target: <= 1 us per
//! heartbeat observation on one core.
//! Run: `cargo bench -p vigil-watchdog --bench engine` (CI: `--profile release`,
//! the shipped build).

use std::hint::black_box;
use std::time::Instant;

use vigil_watchdog::engine::{DomainState, DomainStats, Engine, EngineConfig, Global, Input};

const VMS: usize = 1_000;
const SECONDS: u64 = 120;

fn main() {
    let names: Vec<String> = (0..VMS).map(|i| format!("vm-{i:04}")).collect();
    let mut e = Engine::new(EngineConfig::default());
    for n in &names {
        e.step(
            0,
            n,
            Input::VmAdded {
                agent: true,
                memory_kib: (1 << 20, 2 << 20),
                cluster: false,
            },
        );
        e.step(0, n, Input::Domain(DomainState::Running));
        e.step(
            10,
            n,
            Input::Hello {
                boot_id: "boot".into(),
            },
        );
    }
    let (mut hb_ns, mut hb_n) = (0u128, 0u64);
    let (mut tick_ns, mut tick_n) = (0u128, 0u64);
    let (mut stats_ns, mut stats_n) = (0u128, 0u64);
    let mut outputs = 0usize;
    // Heartbeats are spread over the interval: VM i beats in 10 ms slot i*50/VMS.
    let mut slots: Vec<Vec<&str>> = vec![Vec::new(); 50];
    for (i, n) in names.iter().enumerate() {
        slots[i * 50 / VMS].push(n);
    }
    for ms in (0..SECONDS * 1000).step_by(10) {
        let slot = &slots[((ms % 500) / 10) as usize];
        let t = Instant::now();
        for n in slot {
            let out = e.step(
                ms,
                n,
                Input::Heartbeat {
                    seq: ms,
                    uptime_ms: ms,
                },
            );
            if ms >= 1000 {
                outputs += out.records.len() + out.actions.len();
            }
            hb_n += 1;
        }
        hb_ns += t.elapsed().as_nanos();
        if ms % 1000 == 0 {
            let t = Instant::now();
            for n in &names {
                let s = DomainStats {
                    cpu_time_ns: ms * 1_000_000,
                    block_ops: ms,
                    net_packets: ms,
                };
                black_box(e.step(ms, n, Input::Stats(s)));
                stats_n += 1;
            }
            stats_ns += t.elapsed().as_nanos();
        }
        if ms % 100 == 0 {
            let t = Instant::now();
            let out = e.global(ms, Global::Tick);
            tick_ns += t.elapsed().as_nanos();
            tick_n += VMS as u64;
            if ms >= 1000 {
                outputs += out.records.len() + out.actions.len();
            }
        }
    }
    println!("engine: {VMS} VMs, {SECONDS} s of virtual time");
    println!(
        "  heartbeat observation: {:.0} ns ({hb_n} observations)",
        hb_ns as f64 / hb_n as f64
    );
    println!(
        "  stats observation:     {:.0} ns ({stats_n} observations)",
        stats_ns as f64 / stats_n as f64
    );
    println!(
        "  tick decision per VM:  {:.0} ns ({tick_n} decisions)",
        tick_ns as f64 / tick_n as f64
    );
    println!("  records+actions after the first second: {outputs} (expect 0: no false positives)");
    let per_hb = hb_ns as f64 / hb_n as f64;
    println!(
        "  target <= 1000 ns per heartbeat observation: {}",
        if per_hb <= 1000.0 { "met" } else { "NOT met" }
    );
}
