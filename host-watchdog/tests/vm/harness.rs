//! The rig: one domain under libvirt with vhost-device-vsock and vigild,
//! torn down on drop; and what the cases read from it.

use super::*;

pub const DOMAIN: &str = "vigil-e2e";

pub fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .unwrap()
}

/// The VM, vhost-device-vsock and vigild; torn down on drop.
pub struct Vm {
    pub dir: tempfile::TempDir,
    pub vsock: Child,
    pub vigild: Child,
    pub shell: Option<UnixStream>,
    /// The stand-in service manager vigild runs under.
    pub manager: Arc<Mutex<common::Store>>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        // vigild first: it would start the destroyed domain again.
        let _ = self.vigild.kill();
        let _ = self.vigild.wait();
        let _ = virsh(&["destroy", DOMAIN]);
        let _ = virsh(&["undefine", DOMAIN, "--snapshots-metadata"]);
        let _ = self.vsock.kill();
        let _ = self.vsock.wait();
    }
}

impl Vm {
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- vigild\n{}\n--- console\n{}",
            read("vigild.log"),
            read("console.log")
        )
    }

    /// Stop vigild with SIGTERM (waiting for it to exit) and start it again
    /// with the same config and journal, its log appended, under the
    /// stand-in service manager: what the stopped vigild stored, the new
    /// one is given; with `store`, the new one has a descriptor store of
    /// its own (systemd 254+), else not (an older systemd). How many
    /// descriptors the new vigild took out of the store.
    pub fn restart_vigild(&mut self, store: bool) -> usize {
        self.restart_vigild_after("-TERM", store)
    }

    /// The same after another signal (`-KILL`: a crash, nothing handed
    /// over; what vigild kept in the store goes to the next one).
    pub fn restart_vigild_after(&mut self, signal: &str, store: bool) -> usize {
        let pid = self.vigild.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
        common::wait_until(Duration::from_secs(10), "vigild to exit", || {
            matches!(self.vigild.try_wait(), Ok(Some(_)))
        });
        let manager = self.manager.clone();
        let before = manager.lock().unwrap().removed.len();
        self.vigild = respawn_vigild(self.dir.path(), &manager, store);
        common::wait_until(Duration::from_secs(30), "vigild back", || {
            UnixStream::connect(self.sock()).is_ok()
        });
        // Taken out of the store once the new vigild has read them.
        std::thread::sleep(Duration::from_millis(500));
        let removed = manager.lock().unwrap().removed.len();
        removed - before
    }

    /// Type a command into the guest's root shell (ttyS1). After a reboot
    /// QEMU's socket is a new one: reconnect once when the old one is gone.
    pub fn shell(&mut self, cmd: &str) {
        let sock = self.dir.path().join("shell.sock");
        assert!(
            type_into(&sock, &mut self.shell, cmd),
            "cannot write to the guest shell"
        );
    }

    /// Run a command in the guest's root shell and return what the shell
    /// printed until it finished (the tty's echo of the command included),
    /// waiting at most `secs`.
    pub fn shell_out(&mut self, cmd: &str, secs: u64) -> String {
        use std::io::Read;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Split in the command so that the tty's echo of it never matches.
        let marker = format!("__VIGIL_END_{n}__");
        self.shell(&format!("{cmd}; echo __VIGIL_\"\"END_{n}__"));
        let s = self.shell.as_mut().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => panic!("the guest shell closed during {cmd:?}"),
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some(i) = text.find(&marker) {
                return text[..i].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no answer from the guest shell to {cmd:?}: {text}"
            );
        }
    }

    pub fn state(&self) -> String {
        common::ctl_json(&self.sock(), &["status", DOMAIN])["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn wait_healthy(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !(common::ctl(&self.sock(), &["status", DOMAIN, "--json"])
            .status
            .success()
            && self.state() == "healthy")
        {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the VM to be healthy ({}); journal:\n{:#?}\n{}",
                self.state(),
                common::records(&self.sock()),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait(&self, secs: u64, what: &str, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        common::wait_record(&self.sock(), secs, what, kind, DOMAIN, pred, || self.log())
    }

    pub fn records_since(&self, t: u64) -> Vec<Value> {
        common::records(&self.sock())
            .into_iter()
            .filter(|(rt, _)| *rt >= t)
            .map(|(_, r)| r)
            .collect()
    }

    /// Faults opened or reopened since `t`.
    pub fn faults_since(&self, t: u64) -> Vec<Value> {
        self.records_since(t)
            .into_iter()
            .filter(|r| r["record"] == "fault" || r["record"] == "reopened")
            .collect()
    }

    /// Nothing was a fault since `t` (`what` happened), and the VM is
    /// healthy.
    pub fn assert_untouched_since(&self, t: u64, what: &str) {
        let faults = self.faults_since(t);
        assert!(
            faults.is_empty(),
            "faults across {what}: {faults:?}\n{}",
            self.log()
        );
        assert_eq!(self.state(), "healthy", "{}", self.log());
    }
}

/// Type `cmd` into a guest's root shell at `sock` on `conn` (connected, or
/// connected again once when the old connection is gone: a new boot's
/// QEMU has a new socket); whether it was written.
pub fn type_into(sock: &std::path::Path, conn: &mut Option<UnixStream>, cmd: &str) -> bool {
    let line = format!("{cmd}\n");
    for _ in 0..2 {
        if conn.is_none() {
            *conn = UnixStream::connect(sock).ok();
        }
        if let Some(c) = conn.as_mut() {
            if c.write_all(line.as_bytes()).is_ok() {
                return true;
            }
        }
        *conn = None;
    }
    false
}

/// vigild started again under the stand-in service manager, as systemd
/// starts it: what the manager holds in its store passed from descriptor
/// 3 on, named (`LISTEN_FDS`, `LISTEN_FDNAMES`, for its own PID); with
/// `store`, with a store of its own.
pub fn respawn_vigild(
    w: &std::path::Path,
    manager: &Arc<Mutex<common::Store>>,
    store: bool,
) -> Child {
    use std::os::fd::AsRawFd;
    let stored = std::mem::take(&mut manager.lock().unwrap().fds);
    let mut env = manager_env(w, store);
    let mut script = None;
    if !stored.is_empty() {
        let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
        env.push(("LISTEN_FDS", stored.len().to_string()));
        env.push(("LISTEN_FDNAMES", names.join(":")));
        let moves: Vec<String> = stored
            .iter()
            .enumerate()
            .map(|(i, (_, fd))| format!("{}<&{} {}<&-", 3 + i, fd.as_raw_fd(), fd.as_raw_fd()))
            .collect();
        script = Some(format!(
            "export LISTEN_PID=$$; exec \"$@\" {}",
            moves.join(" ")
        ));
    }
    spawn_vigild(w, &env, script.as_deref())
}

/// A vigild's environment under the stand-in service manager.
pub fn manager_env(w: &std::path::Path, store: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![("NOTIFY_SOCKET", w.join("notify.sock").display().to_string())];
    if store {
        env.push(("FDSTORE", "64".to_string()));
    }
    env
}

/// vigild on the rig's config, logging (appended) to `vigild.log`; with
/// more environment, and through `bash -c script vigild <binary> <args>`
/// when a script is given (descriptors moved into place).
pub fn spawn_vigild(w: &std::path::Path, env: &[(&str, String)], script: Option<&str>) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(w.join("vigild.log"))
        .unwrap();
    let vigild = env!("CARGO_BIN_EXE_vigild");
    let mut cmd = match script {
        Some(script) => {
            let mut c = Command::new("bash");
            c.args(["-c", script, "vigild", vigild]);
            c
        }
        None => Command::new(vigild),
    };
    cmd.arg("--config")
        .arg(w.join("vigild.toml"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A guest to boot: kernel, initramfs, the disk (copied fresh for each
/// boot), the kernel command line and memory (maximum, current).
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    pub current_mib: u32,
    /// More devices for the domain XML.
    pub extra: String,
    /// More lines for vigild's configuration.
    pub vigild_config: String,
}

impl Guest {
    /// The busybox guest (scripts/vm/build-guest.sh): the agent in an
    /// initramfs, a data disk.
    pub fn busybox() -> Guest {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let g = Guest {
            kernel: root.join("target/vm/vmlinuz"),
            initrd: root.join("target/vm/initrd.img"),
            disk: root.join("target/vm/disk.qcow2"),
            cmdline: "console=ttyS0 panic=0 quiet".into(),
            memory_mib: 512,
            current_mib: 384,
            extra: String::new(),
            // The busybox guest reboots in seconds: 30 s without an OOM
            // kill after the memory ladder's reboot is enough (the
            // default, 90 s, is for guests that take a minute to boot).
            vigild_config: "[engine.ladders.memory-exhaustion]\n\
                rungs = [{ action = \"add-memory\", attempts = 2, verify_ms = 30000 }, \
                { action = \"agent-reboot\", attempts = 1, verify_ms = 30000 }]\n\
                exhausted = \"hold\"\n"
                .into(),
        };
        assert!(
            g.kernel.exists() && g.initrd.exists() && g.disk.exists(),
            "build the guest first: bash scripts/vm/build-guest.sh"
        );
        g
    }

    /// The Debian 12 systemd guest with the packaged agent
    /// (scripts/vm/build-debian.sh; its image directory in
    /// `VIGIL_DEBIAN_IMAGE`), with more on the kernel command line.
    pub fn debian(extra_cmdline: &str) -> Guest {
        let dir = PathBuf::from(
            std::env::var("VIGIL_DEBIAN_IMAGE")
                .expect("VIGIL_DEBIAN_IMAGE: run bash scripts/vm/test-debian.sh"),
        );
        let g = Guest {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            disk: dir.join("root.qcow2"),
            cmdline: format!("root=/dev/vda rw console=ttyS0 panic=0 quiet {extra_cmdline}"),
            memory_mib: 768,
            current_mib: 512,
            extra: String::new(),
            vigild_config: String::new(),
        };
        assert!(g.disk.exists(), "no Debian image in {}", dir.display());
        g
    }
}

/// Boot the busybox test domain (see [`boot_guest`]).
pub fn boot(known_good: Option<&str>) -> Vm {
    boot_guest(&Guest::busybox(), known_good)
}

/// Boot the test domain on a fresh copy of the guest's disk, with a fresh
/// vigild. With `known_good`, the shut-off domain's disk is snapshotted
/// under that name before the first start and vigild is told to revert to
/// it.
pub fn boot_guest(g: &Guest, known_good: Option<&str>) -> Vm {
    let disk = &g.disk;
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().to_path_buf();
    let w = w.as_path();
    let _ = virsh(&["destroy", DOMAIN]);
    let _ = virsh(&["undefine", DOMAIN, "--snapshots-metadata"]);
    std::fs::copy(disk, w.join("disk.qcow2")).unwrap();
    let vsock = start_vsock(w);
    let mut config = format!(
        "libvirt_uri = \"qemu:///system\"\njournal = \"{d}/journal.db\"\ncontrol_socket = \"{d}/control.sock\"\n\
         metrics_listen = \"\"\n[[vm]]\ndomain = \"{DOMAIN}\"\nagent = \"hybrid://{d}/vm.vsock:1217\"\nprobe = \"hybrid://{d}/vm.vsock:9\"\n",
        d = w.display()
    );
    if let Some(s) = known_good {
        config.push_str(&format!("snapshot = \"{s}\"\n"));
    }
    // Trends trusted from 15 s of reports (the default is 5 min): a disk
    // that fills in a minute is predicted full before it is.
    config.push_str("[engine.warnings]\ntrend_window_ms = 60000\ntrend_min_span_ms = 15000\n");
    config.push_str(&g.vigild_config);
    std::fs::write(w.join("vigild.toml"), config).unwrap();
    let manager =
        common::manager(std::os::unix::net::UnixDatagram::bind(w.join("notify.sock")).unwrap());
    let vigild = spawn_vigild(w, &manager_env(w, true), None);
    let mut vm = Vm {
        dir,
        vsock,
        vigild,
        shell: None,
        manager,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(vm.sock()).is_err() {
        if let Some(st) = vm.vigild.try_wait().unwrap() {
            panic!("vigild exited ({st}):\n{}", vm.log());
        }
        assert!(
            Instant::now() < deadline,
            "vigild did not come up:\n{}",
            vm.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let xml = domain_xml(g, DOMAIN, "5e1f0000-0000-4000-8000-000000000001", w);
    std::fs::write(w.join("vm.xml"), xml).unwrap();
    let out = virsh(&["define", &w.join("vm.xml").display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(s) = known_good {
        let out = virsh(&["snapshot-create-as", DOMAIN, s]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = virsh(&["start", DOMAIN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vm
}

/// vhost-device-vsock for a guest whose files are in `w` (its vhost-user
/// socket, and `vm.vsock` for the host's side), up before it returns: it
/// must be running before the domain starts.
pub fn start_vsock(w: &std::path::Path) -> Child {
    let vsock = Command::new("vhost-device-vsock")
        .arg("--vm")
        .arg(format!(
            "guest-cid=3,socket={},uds-path={}",
            w.join("vhost.sock").display(),
            w.join("vm.vsock").display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.join("vhost-device-vsock.log")).unwrap())
        .spawn()
        .expect("vhost-device-vsock on PATH (scripts/vm/setup-host.sh installs it)");
    common::wait_until(Duration::from_secs(10), "vhost-user socket", || {
        w.join("vhost.sock").exists()
    });
    vsock
}

/// The domain XML of guest `g` named `name`, its files in `w`.
pub fn domain_xml(g: &Guest, name: &str, uuid: &str, w: &std::path::Path) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let (kernel, initrd) = (&g.kernel, &g.initrd);
    std::fs::read_to_string(root.join("tests/fixtures/vm.xml.in"))
        .unwrap()
        .replace("@NAME@", name)
        .replace("@UUID@", uuid)
        .replace("@MEMORY@", &g.memory_mib.to_string())
        .replace("@CURRENT@", &g.current_mib.to_string())
        .replace("@CMDLINE@", &g.cmdline)
        .replace("@EXTRA@", &g.extra)
        .replace("@WORK@", &w.display().to_string())
        .replace(
            "@KERNEL@",
            &kernel.canonicalize().unwrap().display().to_string(),
        )
        .replace(
            "@INITRD@",
            &initrd.canonicalize().unwrap().display().to_string(),
        )
}

/// Whether the disk as kept in snapshot `name` has an ext2 superblock
/// (magic 0xEF53 at byte 1080). Read with a shared lock: the VM is running.
pub fn has_ext2(vm: &Vm, name: &str) -> bool {
    let out = vm.dir.path().join(format!("{name}.raw"));
    let st = Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "raw", "-l"])
        .arg(format!("snapshot.name={name}"))
        .arg(vm.dir.path().join("disk.qcow2"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img convert of snapshot {name}");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    bytes.get(1080..1082) == Some(&[0x53, 0xEF][..])
}

/// A memory cgroup of the test's own — a child of the one this process
/// is in, never anyone else's — holding one process under a limit of
/// new charges; removed (once empty) on drop. cgroup v1's memory
/// controller where it is mounted, else v2's.
pub struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    /// Move `pid` into a new cgroup `name` whose memory it may grow by at
    /// most `limit` bytes from now (its earlier charges stay where they
    /// were).
    pub fn holding(name: &str, pid: &str, limit: u64) -> MemCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (dir, limit_file) = match v1 {
            Some(p) => (
                PathBuf::from(format!("/sys/fs/cgroup/memory{p}/{name}")),
                "memory.limit_in_bytes",
            ),
            None => {
                let p = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
                (
                    PathBuf::from(format!("/sys/fs/cgroup{p}/{name}")),
                    "memory.max",
                )
            }
        };
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create the test's cgroup {}: {e}", dir.display()));
        let cg = MemCgroup { dir };
        std::fs::write(cg.dir.join(limit_file), limit.to_string()).unwrap();
        if limit_file == "memory.max" {
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        std::fs::write(cg.dir.join("cgroup.procs"), pid).unwrap();
        cg
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() && std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "the test's cgroup {} could not be removed",
            self.dir.display()
        );
    }
}

/// A process of the test's stopped with SIGSTOP until dropped (SIGCONT),
/// so a failing assertion never leaves it stopped.
pub struct Stopped {
    pid: String,
}

impl Stopped {
    /// Stop `pid`.
    pub fn new(pid: &str) -> Stopped {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot stop {pid}");
        Stopped { pid: pid.into() }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid])
            .status();
    }
}
