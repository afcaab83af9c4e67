//! The agent's helper threads: the heartbeat ticker, the kmsg follower and
//! the per-connection reader.

use super::*;

pub(super) fn systemd_notify(state: &[sd_notify::NotifyState<'_>]) {
    // A no-op unless NOTIFY_SOCKET is set (i.e. under systemd).
    let _ = sd_notify::notify(state);
}

/// Heartbeat ticker: never waits for collectors; only for the socket.
pub(super) fn heartbeat_thread(
    slot: Slot,
    interval_ms: Arc<std::sync::atomic::AtomicU32>,
    uptime: impl Fn() -> u64 + Send + 'static,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let interval = Duration::from_millis(u64::from(interval_ms.load(Ordering::Relaxed)));
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now; // fell behind (suspended guest): do not burst
        }
        let mut guard = lock(&slot);
        if let Some(link) = guard.as_mut() {
            link.seq += 1;
            let hb = Message::Heartbeat(Heartbeat {
                seq: link.seq,
                uptime_ms: uptime(),
            });
            if let Err(e) = write_message(&mut link.stream, &hb, link.version, DEFAULT_MAX_PAYLOAD)
            {
                let conn = link.conn;
                let _ = link.stream.shutdown();
                *guard = None;
                let _ = tx.send(Event::Closed(conn, format!("heartbeat write failed: {e}")));
            }
        }
        drop(guard);
        systemd_notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// kmsg follower: scan this boot's records, then follow.
pub(super) fn kmsg_thread(
    config: Config,
    log: Arc<Mutex<KernelLog>>,
    tx: Sender<Event>,
    start: Instant,
) {
    let mut reader = match KmsgReader::open(&config.kmsg, false) {
        Ok(r) => r,
        Err(e) => {
            warn!(
                "kernel log unavailable: path={} error={e}",
                config.kmsg.display()
            );
            return;
        }
    };
    // What an earlier agent of this boot delivered is not news.
    let boot = crate::kmsg::boot_id(&config.proc_root);
    let reported = crate::kmsg::reported_up_to(&config.state_dir, &boot);
    if let Some(seq) = reported {
        info!("kernel log: events up to #{seq} of this boot were reported before; skipping them");
    }
    let mut limit = RateLimit::new(config.limits.kernel_events_per_minute);
    let mut segv_limit = RateLimit::new(1);
    loop {
        let outcome = match reader.read_once() {
            Ok(o) => o,
            Err(e) => {
                warn!("kernel log read failed, giving up on it: {e}");
                return;
            }
        };
        match outcome {
            ReadOutcome::Idle => thread::sleep(Duration::from_millis(200)), // a plain file at EOF
            ReadOutcome::Overwritten => {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counters
                    .overwritten += 1;
            }
            ReadOutcome::Records(mut events) => {
                events.retain(|e| reported.is_none_or(|r| e.seq > r));
                if events.is_empty() {
                    continue;
                }
                let now_ms = start.elapsed().as_millis() as u64;
                let mut urgent = false;
                let mut k = log.lock().unwrap_or_else(|p| p.into_inner());
                for ev in events {
                    k.counters.events += 1;
                    let segv = ev.kind == KernelEventKind::Segfault;
                    if segv {
                        k.counters.segfaults += 1;
                    }
                    let allowed = if segv {
                        segv_limit.allow(now_ms)
                    } else {
                        limit.allow(now_ms)
                    };
                    if allowed {
                        urgent |= !segv;
                        k.push(ev);
                    } else {
                        k.counters.dropped += 1;
                    }
                }
                drop(k);
                if tx.send(Event::Kernel { urgent }).is_err() {
                    return;
                }
            }
        }
    }
}

pub(super) fn reader_thread(conn: u64, reader: MessageReader<Stream>, tx: Sender<Event>) {
    let mut reader = reader;
    loop {
        match reader.read_message() {
            Ok(Some(m)) => {
                if tx.send(Event::Host(conn, Box::new(m))).is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.send(Event::Closed(conn, "host closed the connection".into()));
                return;
            }
            Err(e) => {
                let _ = tx.send(Event::Closed(conn, format!("{e}: {}", source_text(&e))));
                return;
            }
        }
    }
}
