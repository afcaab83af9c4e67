//! The test rig: vigild on the libvirt test driver, real agents, a watched
//! service, vigilctl; and a scripted agent for what a real one will not send.

use super::*;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn agent_bin() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or(workspace().join("target"), PathBuf::from);
    let p = dir.join("debug/vigil-agent");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --workspace` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A watched service name unique to this rig (tests run in parallel and
/// agents match processes by name).
pub fn service_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("svc{}x{n}", std::process::id() % 100_000)
}

/// A test rig: one vigild, its agents, a temp dir. Drop kills everything.
pub struct Rig {
    pub svc: String,
    pub dir: tempfile::TempDir,
    pub vigild: Option<Child>,
    pub agents: Vec<(String, Child)>,
    pub services: Vec<u32>,
    pub metrics_port: u16,
    pub extra: String,
    /// Top-level settings, before the `[[vm]]` tables.
    pub top: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (_, c) in &mut self.agents {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(c) = &mut self.vigild {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.services {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
        // Services the agents restarted: find them by their unique path.
        let svc = self.dir.path().join(&self.svc);
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(format!("^{}", svc.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Rig {
    pub fn new(extra: &str) -> Rig {
        Rig::with_top("", extra)
    }

    /// A rig with top-level settings (`top`) and tables (`extra`).
    pub fn with_top(top: &str, extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let svc = service_name();
        std::fs::copy("/bin/sleep", dir.path().join(&svc)).unwrap();
        let mut rig = Rig {
            svc,
            dir,
            vigild: None,
            agents: Vec::new(),
            services: Vec::new(),
            metrics_port: free_port(),
            extra: extra.into(),
            top: top.into(),
        };
        rig.start_vigild();
        rig
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start_vigild(&mut self) {
        self.start_vigild_with(&[], None);
    }

    /// vigild with more environment, and when `wrapper` is given, started
    /// by `bash -c wrapper vigild <binary> <args>` (a stand-in service
    /// manager's last steps: descriptors in place, `exec "$@"`).
    pub fn start_vigild_with(&mut self, env: &[(&str, String)], wrapper: Option<&str>) {
        self.write_config();
        let _ = std::fs::remove_file(self.path("control.sock"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("vigild.log"))
            .unwrap();
        let vigild = env!("CARGO_BIN_EXE_vigild");
        let mut cmd = match wrapper {
            Some(script) => {
                let mut c = Command::new("bash");
                c.args(["-c", script, "vigild", vigild]);
                c
            }
            None => Command::new(vigild),
        };
        let child = cmd
            .arg("--config")
            .arg(self.path("vigild.toml"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.vigild = Some(child);
        wait_until(Duration::from_secs(10), "control socket", || {
            UnixStream::connect(self.path("control.sock")).is_ok()
        });
    }

    /// Write `vigild.toml` from the rig's settings (`top`, `extra`).
    pub fn write_config(&self) {
        let d = self.dir.path().display().to_string();
        // The rig's own settings, unless `top` gives them.
        let mut base = String::new();
        for (key, value) in [
            ("journal", format!("{d}/journal.db")),
            ("metrics_listen", format!("127.0.0.1:{}", self.metrics_port)),
        ] {
            if !self.top.lines().any(|l| l.starts_with(&format!("{key} ="))) {
                base.push_str(&format!("{key} = \"{value}\"\n"));
            }
        }
        let config = format!(
            "libvirt_uri = \"test://{}\"\ncontrol_socket = \"{d}/control.sock\"\n{base}{}\
             [[vm]]\ndomain = \"web\"\nagent = \"unix://{d}/web.sock\"\n\
             [[vm]]\ndomain = \"db\"\nagent = \"unix://{d}/db.sock\"\n{}",
            workspace()
                .join("tests/fixtures/node.xml")
                .canonicalize()
                .unwrap()
                .display(),
            self.top,
            self.extra
        );
        std::fs::write(self.path("vigild.toml"), config).unwrap();
    }

    pub fn kill_vigild(&mut self) {
        let mut c = self.vigild.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    pub fn start_service(&mut self) {
        // Not `.output()`: the forked service would hold its pipes open.
        let st = Command::new("setsid")
            .arg("-f")
            .arg(self.path(&self.svc))
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        wait_until(Duration::from_secs(5), "service running", || {
            self.service_pid().is_some()
        });
        if let Some(p) = self.service_pid() {
            self.services.push(p);
        }
    }

    /// SIGKILL the watched service; its pid.
    pub fn kill_service(&self) -> u32 {
        let pid = self.service_pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        pid
    }

    pub fn service_pid(&self) -> Option<u32> {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(format!("^{}", self.path(&self.svc).display()))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Start an agent for `vm`; `restart` is the restart command's shell text.
    pub fn start_agent(&mut self, vm: &str, restart: Option<&str>) {
        let d = self.dir.path().display().to_string();
        let mut conf = format!(
            "connect = \"unix://{d}/{vm}.sock\"\nstate_dir = \"{d}/{vm}-run\"\nkmsg = \"{d}/{vm}-kmsg\"\n[limits]\nmax_backoff_ms = 500\n"
        );
        if let Some(cmd) = restart {
            conf.push_str(&format!(
                "[watch]\nprocesses = [\"{svc}\"]\n[[allow]]\naction = \"restart-service\"\nname = \"{svc}\"\nargv = [\"/bin/sh\", \"-c\", \"{cmd}\"]\n",
                svc = self.svc
            ));
        }
        std::fs::write(self.path(&format!("{vm}-agent.toml")), conf).unwrap();
        std::fs::write(self.path(&format!("{vm}-kmsg")), "").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{vm}-agent.log")))
            .unwrap();
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(self.path(&format!("{vm}-agent.toml")))
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agents.push((vm.to_string(), child));
    }

    pub fn kill_agent(&mut self, vm: &str) {
        let i = self.agents.iter().position(|(n, _)| n == vm).unwrap();
        let (_, mut c) = self.agents.remove(i);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        common::ctl(&self.path("control.sock"), args)
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        common::ctl_json(&self.path("control.sock"), args)
    }

    pub fn state(&self, vm: &str) -> String {
        self.ctl_json(&["status", vm])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every journal record, in order.
    pub fn records(&self) -> Vec<Value> {
        common::records(&self.path("control.sock"))
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    pub fn find(&self, kind: &str, vm: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        common::find(&self.path("control.sock"), kind, vm, pred)
    }

    pub fn wait_record(
        &self,
        secs: u64,
        what: &str,
        kind: &str,
        vm: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        common::wait_record(
            &self.path("control.sock"),
            secs,
            what,
            kind,
            vm,
            pred,
            || self.log(),
        )
    }

    /// Poll until `f` holds; on a timeout, show the journal and the log.
    pub fn wait_for(&self, secs: u64, what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; journal:\n{:#?}\nlog:\n{}",
                self.records(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_healthy(&self, vm: &str) {
        wait_until(Duration::from_secs(20), &format!("{vm} healthy"), || {
            self.state(vm) == "healthy"
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("vigild.log")).unwrap_or_default()
    }

    pub fn intents(&self, vm: &str) -> Vec<String> {
        self.find("intent", vm, |_| true)
            .iter()
            .map(|r| r["action"]["kind"].to_string())
            .collect()
    }

    pub fn scrape(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }
}

pub fn restart_cmd(rig: &Rig) -> String {
    format!("/usr/bin/setsid -f {} 3600", rig.path(&rig.svc).display())
}

/// A scripted agent: handshake, heartbeats, then whatever the test sends.
pub struct FakeAgent {
    pub stream: UnixStream,
    pub reader: MessageReader<UnixStream>,
    /// The version vigild chose.
    pub version: u8,
}

impl FakeAgent {
    pub fn connect(rig: &Rig, vm: &str) -> FakeAgent {
        let stream = UnixStream::connect(rig.path(&format!("{vm}.sock"))).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = MessageReader::new(stream.try_clone().unwrap(), DEFAULT_MAX_PAYLOAD);
        let mut a = FakeAgent {
            stream,
            reader: MessageReader::new(UnixStream::pair().unwrap().0, 1),
            version: 1,
        };
        let hello = Hello {
            versions: SUPPORTED,
            agent_version: "fake".into(),
            boot_id: "fake-boot".into(),
            hostname: vm.into(),
            kernel_release: "6.1".into(),
            capabilities: vec![],
        };
        a.send(&Message::Hello(hello));
        let Some(Message::Welcome(w)) = reader.read_message().unwrap() else {
            panic!("no welcome");
        };
        reader.decoder().set_version(w.version);
        a.version = w.version;
        a.reader = reader;
        a
    }

    pub fn send(&mut self, m: &Message) {
        write_message(&mut self.stream, m, self.version, DEFAULT_MAX_PAYLOAD).unwrap();
    }
}
