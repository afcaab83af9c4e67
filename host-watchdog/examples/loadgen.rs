//! Load generator: N simulated agents speaking the real protocol over the
//! real Unix sockets of a vigild configured with `[[vm]] agent =
//! "unix://DIR/vmI.sock"` (see `scripts/bench-scale.sh`, which also writes
//! the libvirt test-driver node with N running domains).
//!
//! Each agent does the real handshake, sends a heartbeat every 500 ms and a
//! realistic report every 5 s, starts at a spread-out moment, and reads
//! (and drops) what the host sends. With `--silence K`, the first K agents
//! stop sending (their connections stay open) on SIGUSR1; the moment each
//! went silent is printed as `silenced VM MS` (Unix ms) so detection
//! latency can be read off the journal.
//!
//! `cargo run --release -p vigil-watchdog --example loadgen -- --dir DIR -n 1000`

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use vigil_protocol::io::{write_message_async, AsyncMessageReader};
use vigil_protocol::snapshot::{
    Cpu, Filesystem, Memory, ProcessSummary, Snapshot, WatchTarget, WatchedService,
};
use vigil_protocol::*;

#[derive(Parser)]
#[command(about = "N simulated vigil agents over Unix sockets")]
struct Args {
    /// Directory holding vigild's agent sockets (vm1.sock ... vmN.sock).
    #[arg(long)]
    dir: PathBuf,
    /// Number of agents.
    #[arg(short, default_value_t = 100)]
    n: usize,
    /// Spread the agents' starts over this many ms.
    #[arg(long, default_value_t = 5_000)]
    spread_ms: u64,
    /// Silence this many agents (vm1..vmK) on SIGUSR1.
    #[arg(long, default_value_t = 0)]
    silence: usize,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    for_s: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A report such as a small Linux guest sends.
fn report(seq: u64, uptime_ms: u64) -> Message {
    let fs = |m: &str, d: &str, size: u64, avail: u64| Filesystem {
        mount_point: m.into(),
        device: d.into(),
        fs_type: "ext4".into(),
        size_bytes: size,
        avail_bytes: avail,
        inodes_total: 1 << 20,
        inodes_free: 1 << 19,
        read_only: false,
    };
    Message::Report(Report {
        seq,
        trigger: ReportTrigger::Periodic,
        snapshot: Snapshot {
            uptime_ms,
            wall_ms: unix_ms(),
            processes: Some(ProcessSummary {
                total: 120,
                zombies: 0,
                uninterruptible: 0,
            }),
            watched: vec![WatchedService {
                target: WatchTarget::Unit("nginx.service".into()),
                running: true,
                pid: Some(812),
                restarts: 0,
            }],
            filesystems: vec![
                fs("/", "/dev/vda1", 20 << 30, 12 << 30),
                fs("/var", "/dev/vdb", 50 << 30, 30 << 30),
            ],
            memory: Some(Memory {
                total_bytes: 2 << 30,
                available_bytes: 1 << 30,
                ..Memory::default()
            }),
            cpu: Some(Cpu::default()),
            ..Snapshot::default()
        },
    })
}

async fn agent(
    i: usize,
    a: std::sync::Arc<Args>,
    t0: tokio::time::Instant,
    mut hush: tokio::sync::watch::Receiver<bool>,
) {
    let vm = format!("vm{i}");
    let start = a.spread_ms * (i as u64 % 1000) / 1000;
    tokio::time::sleep_until(t0 + Duration::from_millis(start)).await;
    let path = a.dir.join(format!("{vm}.sock"));
    let stream = loop {
        match UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let (rd, mut wr) = stream.into_split();
    let mut reader = AsyncMessageReader::new(rd, 1 << 20);
    let hello = Message::Hello(Hello {
        versions: SUPPORTED,
        agent_version: "loadgen".into(),
        boot_id: format!("boot-{i}").as_str().into(),
        hostname: vm.as_str().into(),
        kernel_release: "6.1.0".into(),
        capabilities: vec![],
    });
    if write_message_async(&mut wr, &hello, 1, 1 << 20)
        .await
        .is_err()
    {
        eprintln!("{vm}: hello failed");
        return;
    }
    let version = match reader.read_message().await {
        Ok(Some(Message::Welcome(w))) => w.version,
        other => {
            eprintln!("{vm}: no welcome: {other:?}");
            return;
        }
    };
    reader.decoder().set_version(version);
    // Read and drop what the host sends (keepalives, commands).
    tokio::spawn(async move { while let Ok(Some(_)) = reader.read_message().await {} });
    let silenced = i <= a.silence;
    let mut beat = tokio::time::interval(Duration::from_millis(500));
    let mut seq = 0u64;
    let up = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = hush.changed(), if silenced => {}
        }
        if silenced && *hush.borrow() {
            println!("silenced {vm} {}", unix_ms());
            std::future::pending::<()>().await; // open, and silent
        }
        seq += 1;
        let uptime_ms = up.elapsed().as_millis() as u64 + 60_000;
        let hb = Message::Heartbeat(Heartbeat { seq, uptime_ms });
        if write_message_async(&mut wr, &hb, version, 1 << 20)
            .await
            .is_err()
        {
            eprintln!("{vm}: connection lost");
            return;
        }
        if seq % 10 == 0 {
            let _ =
                write_message_async(&mut wr, &report(seq / 10, uptime_ms), version, 1 << 20).await;
        }
        let _ = wr.flush().await;
    }
}

fn main() {
    let args = std::sync::Arc::new(Args::parse());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t0 = tokio::time::Instant::now();
        let (hush_tx, hush) = tokio::sync::watch::channel(false);
        for i in 1..=args.n {
            tokio::spawn(agent(i, args.clone(), t0, hush.clone()));
        }
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
                usr1.recv().await;
                let _ = hush_tx.send(true);
            }
        });
        if args.for_s > 0 {
            tokio::time::sleep(Duration::from_secs(args.for_s)).await;
        } else {
            std::future::pending::<()>().await;
        }
    });
}
