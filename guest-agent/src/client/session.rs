//! One connection's life: the session loop that reports, answers the
//! host's messages and runs its commands, until the connection ends.

use super::*;

impl Agent {
    pub(super) fn session(
        &mut self,
        stream: Stream,
        welcome: Welcome,
        reader: MessageReader<Stream>,
    ) -> End {
        self.conn += 1;
        let conn = self.conn;
        let mut settings = clamp(welcome.settings);
        self.heartbeat_ms
            .store(settings.heartbeat_interval_ms, Ordering::Relaxed);
        self.collector.set_full_percent(
            settings.thresholds.disk_full_percent,
            settings.thresholds.inodes_full_percent,
        );
        self.version = welcome.version;
        let closer = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => return End::Lost(format!("cannot clone stream: {e}")),
        };
        *lock(&self.slot) = Some(Link {
            conn,
            stream,
            version: welcome.version,
            seq: 0,
        });
        let tx = self.tx.clone();
        if let Err(e) = thread::Builder::new()
            .name("reader".into())
            .spawn(move || reader_thread(conn, reader, tx))
        {
            return End::Lost(format!("cannot start reader: {e}"));
        }
        let mut report_seq = 0;
        let end = self.session_loop(conn, &mut settings, &mut report_seq);
        let _ = closer.shutdown(); // ends the reader thread
        *lock(&self.slot) = None;
        end
    }

    fn session_loop(&mut self, conn: u64, settings: &mut Settings, seq: &mut u64) -> End {
        if let Err(e) = self.report(seq, ReportTrigger::Connected) {
            return End::Lost(e.to_string());
        }
        // A window open before this session (an agent restarted within
        // it, a host that restarted) is told again, with the time left.
        let open = {
            let mut m = self.maint.lock().unwrap_or_else(|p| p.into_inner());
            let now = crate::maintenance::now_ms();
            m.current(now)
                .map(|w| crate::maintenance::Change::Start(w.left_s(now), w.reason.clone()))
        };
        if let Some(c) = open {
            if let Err(e) = self.tell_maintenance(c) {
                return End::Lost(e.to_string());
            }
        }
        let mut next_report =
            Instant::now() + Duration::from_millis(settings.report_interval_ms.into());
        let mut next_watch = Instant::now() + WATCH_TICK;
        let uptime = |c: &Config| crate::collect::uptime_ms(&c.proc_root).unwrap_or(0);
        // The guest clock of the last cheap check that found nothing new.
        let mut last_good = uptime(&self.config);
        self.host_heard = Instant::now();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if stopping || self.going_down.is_some() {
                let reason = self.going_down.take().unwrap_or_else(stop_reason);
                info!("stopping: sending bye reason={reason:?}");
                if let Err(e) = self.send(&Message::Bye(Bye { reason })) {
                    warn!("could not send bye: {e}");
                }
                return if stopping {
                    End::Stopped
                } else {
                    End::GoingDown
                };
            }
            let now = Instant::now();
            if let Some(deadline) = self.host_deadline() {
                if now >= deadline {
                    // If the host is alive after all, it hears a clean
                    // goodbye before the new connection's hello.
                    let _ = self.send(&Message::Bye(Bye {
                        reason: ByeReason::Other("host silent; reconnecting".into()),
                    }));
                    return End::Lost(format!(
                        "host silent for {} ms (keepalive every {} ms): session taken for dead",
                        now.duration_since(self.host_heard).as_millis(),
                        self.keepalive_ms
                    ));
                }
            }
            if now >= next_report {
                if let Err(e) = self.report(seq, ReportTrigger::Periodic) {
                    return End::Lost(e.to_string());
                }
                next_report = now + Duration::from_millis(settings.report_interval_ms.into());
                last_good = uptime(&self.config);
                continue;
            }
            if now >= next_watch {
                next_watch = now + WATCH_TICK;
                if self.collector.watch_changed()
                    || self.collector.fs_changed()
                    || self.collector.net_changed()
                {
                    let trigger = if self.version >= 2 {
                        ReportTrigger::Changed {
                            last_good_uptime_ms: last_good,
                        }
                    } else {
                        ReportTrigger::Periodic // named by what changed
                    };
                    if let Err(e) = self.report(seq, trigger) {
                        return End::Lost(e.to_string());
                    }
                }
                last_good = uptime(&self.config);
                continue;
            }
            let mut until = next_report.min(next_watch);
            if let Some(d) = self.host_deadline() {
                until = until.min(d);
            }
            let wait = until.saturating_duration_since(now);
            let ev = match self.rx.recv_timeout(wait) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return End::Lost("internal channel closed".into())
                }
            };
            let r = match ev {
                Event::Kernel { urgent } if urgent => self.report(seq, ReportTrigger::KernelEvent),
                Event::Kernel { .. } => Ok(()),
                Event::Closed(c, why) if c == conn => return End::Lost(why),
                Event::Closed(..) => Ok(()), // an older connection's reader
                Event::Host(c, msg) if c == conn => {
                    self.host_heard = Instant::now();
                    self.on_host(*msg, settings)
                }
                Event::Host(..) => Ok(()),
                Event::CommandDone(result) => {
                    self.command_running = false;
                    // A command that queued a reboot or power-off (the
                    // reboot command, a repair that reboots): the host
                    // hears it now, not from services stopping one by one.
                    if result.outcome == CommandOutcome::Succeeded {
                        self.going_down = self.going_down.take().or_else(going_down);
                    }
                    self.send(&Message::CommandResult(result))
                }
                Event::Stop => Ok(()), // the flag is checked at the top of the loop
                Event::Maintenance(c) => self.tell_maintenance(c),
            };
            if let Err(e) = r {
                return End::Lost(e.to_string());
            }
        }
    }

    fn on_host(&mut self, msg: Message, settings: &mut Settings) -> io::Result<()> {
        match msg {
            Message::Probe(Probe { id }) => {
                let (mut snapshot, _) = self.snapshot();
                if self.shutting_down(&mut snapshot) {
                    return Ok(());
                }
                let events = snapshot.kernel_events.clone();
                self.send(&Message::ProbeReply(ProbeReply { id, snapshot }))?;
                self.delivered(&events);
                Ok(())
            }
            Message::Command(Command { id, action }) => self.on_command(id, action),
            Message::Keepalive(k) => {
                self.keepalive_ms = k.interval_ms.clamp(100, 600_000);
                Ok(())
            }
            Message::Config(vigil_protocol::Config { settings: s }) => {
                *settings = clamp(s);
                self.heartbeat_ms
                    .store(settings.heartbeat_interval_ms, Ordering::Relaxed);
                info!(
                    "settings changed: heartbeat_ms={} report_ms={}",
                    settings.heartbeat_interval_ms, settings.report_interval_ms
                );
                Ok(())
            }
            other => {
                debug!("ignoring unexpected {} from host", other.kind().name());
                Ok(())
            }
        }
    }

    /// When the host's silence means a dead session (protocol 2 only: a
    /// version-1 host never sends keepalives).
    fn host_deadline(&self) -> Option<Instant> {
        (self.version >= 2).then(|| {
            let missed =
                Duration::from_millis(u64::from(self.keepalive_ms) * u64::from(KEEPALIVES_MISSED));
            self.host_heard + missed.max(MIN_HOST_SILENCE)
        })
    }

    fn on_command(&mut self, id: u32, action: CommandAction) -> io::Result<()> {
        let what = commands::describe(&action);
        let Some(entry) = commands::lookup(&self.config, &action).cloned() else {
            if self
                .deny_log
                .allow(self.started.elapsed().as_millis() as u64)
            {
                warn!("denied host command not in allow-list: {what}");
            }
            return self.send(&Message::CommandResult(CommandResult {
                id,
                outcome: CommandOutcome::Denied,
            }));
        };
        if self.command_running {
            return self.send(&Message::CommandResult(CommandResult {
                id,
                outcome: CommandOutcome::Busy,
            }));
        }
        info!("running host command: {what}");
        self.command_running = true;
        let tx = self.tx.clone();
        let spawned = thread::Builder::new()
            .name("command".into())
            .spawn(move || {
                let outcome = commands::run(&entry);
                let _ = tx.send(Event::CommandDone(CommandResult { id, outcome }));
            });
        if let Err(e) = spawned {
            self.command_running = false;
            let outcome = CommandOutcome::Failed {
                exit_code: None,
                detail: Text::from(format!("cannot start: {e}")),
            };
            return self.send(&Message::CommandResult(CommandResult { id, outcome }));
        }
        Ok(())
    }
}
