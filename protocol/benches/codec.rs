//! Encode/decode throughput of a realistic report (40 watched services,
//! 10 filesystems, 20 kernel events). Prints ns per message, bytes per
//! message and messages per second on one core. Run with
//! `cargo bench -p vigil-protocol --bench codec` (CI: `--profile release`, the shipped build).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil_protocol::{encode_into, Message, MessageDecoder, DEFAULT_MAX_PAYLOAD};

/// Run `f` repeatedly for about `budget`; return the best ns/iteration over 5 rounds.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() > budget / 10 {
            break;
        }
        iters *= 2;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let msg = Message::Report(common::realistic_report());
    let wire = encode_into(&msg, 1, DEFAULT_MAX_PAYLOAD, Vec::new()).expect("encodes");
    let budget = Duration::from_millis(500);

    if std::env::args().any(|a| a == "--decode-only") {
        // For profilers: spin on the decode path alone.
        let dec = measure(Duration::from_secs(3), || {
            let mut d = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
            let mut input: &[u8] = black_box(&wire);
            black_box(d.push(&mut input).expect("decodes"));
        });
        println!("report decode: {dec:.0} ns/msg");
        return;
    }
    let mut buf = Vec::with_capacity(wire.len());
    let enc = measure(budget, || {
        buf.clear();
        buf = encode_into(
            black_box(&msg),
            1,
            DEFAULT_MAX_PAYLOAD,
            std::mem::take(&mut buf),
        )
        .expect("encodes");
        black_box(&buf);
    });
    let dec = measure(budget, || {
        let mut d = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input: &[u8] = black_box(&wire);
        black_box(d.push(&mut input).expect("decodes"));
    });
    let hb = Message::Heartbeat(vigil_protocol::Heartbeat {
        seq: 123_456,
        uptime_ms: 61_728_000,
    });
    let hb_wire = encode_into(&hb, 1, DEFAULT_MAX_PAYLOAD, Vec::new()).expect("encodes");
    let hb_dec = measure(budget, || {
        let mut d = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input: &[u8] = black_box(&hb_wire);
        black_box(d.push(&mut input).expect("decodes"));
    });

    println!(
        "report: {} bytes per message (frame incl. 8-byte header)",
        wire.len()
    );
    println!("report encode: {enc:.0} ns/msg ({:.0} msgs/s)", 1e9 / enc);
    println!("report decode: {dec:.0} ns/msg ({:.0} msgs/s)", 1e9 / dec);
    println!(
        "heartbeat: {} bytes, decode {hb_dec:.0} ns/msg",
        hb_wire.len()
    );
    // No target line here: what matters is the end-to-end figure of
    // scripts/bench-scale.sh (vigild's CPU per VM with real sessions).
}
