//! The chaos soak (`scripts/soak.sh [MINUTES] [--seed N]`): three busybox
//! guests under one vigild, a seeded schedule of faults overlapping across
//! them, and disruptions of vigild's own world (vigild SIGKILLed and
//! started again, libvirtd stopped and started, the host's CPUs starved, a
//! hostile flood on an agent socket). Every injection goes to an injection
//! log (`injections.jsonl`) that the auditor (`vigil-audit`) checks the
//! journal against; this test only drives, and fails only when the rig
//! itself does. Its files stay in `target/soak/seed-N/`.

use super::*;

const GUESTS: usize = 3;

/// splitmix64: the schedule from its seed, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Guest1 {
    name: String,
    dir: PathBuf,
    vsock: Child,
    shell: Option<UnixStream>,
    /// Not to be injected into before then (an injection on it in flight).
    busy_until: Instant,
}

/// What is done later: when a fault was seen, or at the latest by then.
struct Heal {
    vm: Option<usize>,
    /// Done once this fault kind shows in the VM's status.
    when_fault: Option<&'static str>,
    deadline: Instant,
    what: HealKind,
}

enum HealKind {
    Shell(&'static str),
    Cont(String),
    Resume,
    MaintenanceOff,
    StartLibvirtd,
    StopBusy(Vec<Child>),
    Done,
}

struct Soak {
    dir: PathBuf,
    vigild: Child,
    /// The stand-in service manager vigild runs under, with a descriptor
    /// store: what a killed vigild kept there goes to the next one.
    manager: Arc<Mutex<common::Store>>,
    vms: Vec<Guest1>,
    log: std::fs::File,
    heals: Vec<Heal>,
}

impl Drop for Soak {
    fn drop(&mut self) {
        let _ = self.vigild.kill();
        let _ = self.vigild.wait();
        for h in &mut self.heals {
            if let HealKind::StopBusy(children) = &mut h.what {
                for c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        for g in &mut self.vms {
            let _ = virsh(&["destroy", &g.name]);
            let _ = virsh(&["undefine", &g.name, "--snapshots-metadata"]);
            let _ = g.vsock.kill();
            let _ = g.vsock.wait();
        }
    }
}

impl Soak {
    fn sock(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn note(&mut self, v: Value) {
        let mut v = v;
        if v.get("t").is_none() {
            v["t"] = now_ms().into();
        }
        eprintln!("soak: {v}");
        writeln!(self.log, "{v}").unwrap();
    }

    fn vigild_up(&self) -> bool {
        UnixStream::connect(self.sock()).is_ok()
    }

    fn status(&self, i: usize) -> Value {
        let out = common::ctl(&self.sock(), &["status", &self.vms[i].name, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn qemu_pid(&self, i: usize) -> Option<String> {
        let out = Command::new("pgrep")
            .args(["-f", &format!("guest={},", self.vms[i].name)])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(|l| l.trim().to_string())
    }

    fn type_in(&mut self, i: usize, cmd: &str) {
        let g = &mut self.vms[i];
        let sock = g.dir.join("shell.sock");
        if !type_into(&sock, &mut g.shell, cmd) {
            eprintln!("soak: {}: cannot type into its shell", g.name);
        }
    }

    fn start_vigild(&mut self) {
        self.vigild = respawn_vigild(&self.dir, &self.manager, true);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.vigild_up() {
            assert!(Instant::now() < deadline, "vigild did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_journal(&mut self, when: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
            .arg("--check-journal")
            .arg(self.dir.join("journal.db"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.note(serde_json::json!({
            "what": "journal-check", "vm": "*", "when": when,
            "ok": out.status.success(), "said": said,
        }));
    }
}

fn boot_all(dir: &std::path::Path) -> Soak {
    let g = Guest::busybox();
    let mut config = format!(
        "libvirt_uri = \"qemu:///system\"\njournal = \"{d}/journal.db\"\ncontrol_socket = \"{d}/control.sock\"\n\
         metrics_listen = \"\"\n",
        d = dir.display()
    );
    let mut vms = Vec::new();
    for n in 1..=GUESTS {
        let name = format!("vigil-soak-{n}");
        let w = dir.join(&name);
        std::fs::create_dir_all(&w).unwrap();
        let _ = virsh(&["destroy", &name]);
        let _ = virsh(&["undefine", &name, "--snapshots-metadata"]);
        std::fs::copy(&g.disk, w.join("disk.qcow2")).unwrap();
        let vsock = start_vsock(&w);
        config.push_str(&format!(
            "[[vm]]\ndomain = \"{name}\"\nagent = \"hybrid://{d}/vm.vsock:1217\"\nprobe = \"hybrid://{d}/vm.vsock:9\"\n",
            d = w.display()
        ));
        vms.push(Guest1 {
            name,
            dir: w,
            vsock,
            shell: None,
            busy_until: Instant::now(),
        });
    }
    std::fs::write(dir.join("vigild.toml"), config).unwrap();
    let log = std::fs::File::create(dir.join("injections.jsonl")).unwrap();
    let manager =
        common::manager(std::os::unix::net::UnixDatagram::bind(dir.join("notify.sock")).unwrap());
    let vigild = respawn_vigild(dir, &manager, true);
    let soak = Soak {
        dir: dir.to_path_buf(),
        vigild,
        manager,
        vms,
        log,
        heals: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !soak.vigild_up() {
        assert!(Instant::now() < deadline, "vigild did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (n, v) in soak.vms.iter().enumerate() {
        let uuid = format!("5e1f0000-0000-4000-8000-0000000005{n:02}");
        let xml = domain_xml(&g, &v.name, &uuid, &v.dir);
        std::fs::write(v.dir.join("vm.xml"), xml).unwrap();
        let out = virsh(&["define", &v.dir.join("vm.xml").display().to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = virsh(&["start", &v.name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    soak
}

/// How a fault injection is expected to show: its kind and layer, found
/// within this long (after vigild is back, if it was down).
fn expect(kind: &str, layer: &str, within_s: u64) -> Value {
    serde_json::json!({ "kind": kind, "layer": layer, "within_ms": within_s * 1000 })
}

#[test]
#[ignore = "soak: run by scripts/soak.sh"]
fn soak() {
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    let own_libvirtd = std::env::var("VIGIL_OWN_LIBVIRTD").as_deref() == Ok("1");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join(format!("target/soak/seed-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(seed);
    let mut s = boot_all(&dir);
    s.note(serde_json::json!({
        "what": "start", "vm": "*", "seed": seed, "minutes": minutes,
        "vms": s.vms.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
    }));
    // Every guest healthy before the first injection.
    let up = Instant::now() + Duration::from_secs(120);
    while (0..GUESTS).any(|i| s.status(i)["state"] != "healthy") {
        assert!(Instant::now() < up, "the guests did not come up healthy");
        std::thread::sleep(Duration::from_millis(500));
    }
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut next = Instant::now();
    let mut counts: std::collections::BTreeMap<&str, u32> = Default::default();
    while Instant::now() < end {
        run_heals(&mut s);
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        next = Instant::now() + Duration::from_millis(4_000 + rng.below(8_000));
        let what = pick(&mut rng, own_libvirtd);
        if inject(&mut s, &mut rng, what) {
            *counts.entry(what).or_default() += 1;
        }
    }
    // The schedule is over: what is pending is healed (each still waits
    // for its fault to show, to its deadline), then every guest is given
    // time to end healthy (or quarantined).
    while !s.heals.is_empty() {
        run_heals(&mut s);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Done when every guest is healthy or quarantined, or when nothing has
    // moved for 20 s outside a transient state (a fault held at the end
    // of its ladder), at most 150 s.
    let settle = Instant::now() + Duration::from_secs(150);
    let (mut last, mut since) = (Vec::new(), Instant::now());
    loop {
        let states: Vec<String> = (0..GUESTS)
            .map(|i| s.status(i)["state"].as_str().unwrap_or("?").to_string())
            .collect();
        if states != last {
            (last, since) = (states.clone(), Instant::now());
        }
        let transient =
            |st: &String| matches!(st.as_str(), "suspect" | "recovering" | "discovering" | "?");
        if states
            .iter()
            .all(|st| st == "healthy" || st == "quarantined")
            || (!states.iter().any(transient) && since.elapsed() > Duration::from_secs(20))
            || Instant::now() > settle
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for i in 0..GUESTS {
        let st = s.status(i);
        let name = s.vms[i].name.clone();
        s.note(serde_json::json!({
            "what": "final", "vm": name, "state": st["state"], "fault": st["fault"],
            "quarantine": st["quarantine"], "domain_state": st["domain_state"],
        }));
    }
    s.check_journal("end");
    eprintln!("soak: injected {counts:?}");
}

/// The next disruption, by weight.
fn pick(rng: &mut Rng, own_libvirtd: bool) -> &'static str {
    let table: &[(&'static str, u64)] = &[
        ("service-kill", 6),
        ("agent-kill", 3),
        ("panic", 3),
        ("qemu-stop", 2),
        ("qemu-kill", 2),
        ("disk-full", 2),
        ("oom", 1),
        ("suspend", 2),
        ("maintenance", 2),
        ("vigild-kill", 3),
        ("libvirtd-restart", if own_libvirtd { 2 } else { 0 }),
        ("cpu-starve", 2),
        ("flood", 2),
    ];
    let total: u64 = table.iter().map(|(_, w)| w).sum();
    let mut r = rng.below(total);
    for (what, w) in table {
        if r < *w {
            return what;
        }
        r -= w;
    }
    "service-kill"
}

/// Inject `what`; false when nothing could take it now (every guest busy
/// or not healthy, vigild down).
fn inject(s: &mut Soak, rng: &mut Rng, what: &'static str) -> bool {
    let now = Instant::now();
    let world = matches!(
        what,
        "vigild-kill" | "libvirtd-restart" | "cpu-starve" | "flood"
    );
    let vm = if world && what != "flood" {
        None
    } else {
        if !s.vigild_up() {
            return false;
        }
        let idle: Vec<usize> = (0..GUESTS)
            .filter(|i| s.vms[*i].busy_until <= now && s.status(*i)["state"] == "healthy")
            .collect();
        if idle.is_empty() {
            return false;
        }
        Some(idle[rng.below(idle.len() as u64) as usize])
    };
    let name = vm.map_or("*".to_string(), |i| s.vms[i].name.clone());
    let secs = Duration::from_secs;
    let heal = |vm, when_fault, after: u64, what| Heal {
        vm,
        when_fault,
        deadline: now + secs(after),
        what,
    };
    let busy = |s: &mut Soak, i: usize, for_s: u64| s.vms[i].busy_until = now + secs(for_s);
    match (what, vm) {
        ("service-kill", Some(i)) => {
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("service-down", "guest-service", 20)}));
            s.type_in(i, "killall testsvc");
            busy(s, i, 25);
        }
        ("agent-kill", Some(i)) => {
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("agent-down", "agent", 30)}));
            s.type_in(i, "killall agent-loop; killall -9 vigil-agent");
            s.heals.push(heal(
                Some(i),
                Some("agent-down"),
                35,
                HealKind::Shell("setsid /bin/agent-loop </dev/null >/dev/null 2>&1 &"),
            ));
            busy(s, i, 45);
        }
        ("panic", Some(i)) => {
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("guest-panic", "guest-kernel", 20)}));
            s.type_in(i, "echo c > /proc/sysrq-trigger");
            busy(s, i, 40);
        }
        ("qemu-stop", Some(i)) => {
            let Some(pid) = s.qemu_pid(i) else {
                return false;
            };
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("vcpu-stalled", "host", 40)}));
            let _ = Command::new("kill").args(["-STOP", &pid]).status();
            s.heals
                .push(heal(Some(i), Some("vcpu-stalled"), 45, HealKind::Cont(pid)));
            busy(s, i, 60);
        }
        ("qemu-kill", Some(i)) => {
            let Some(pid) = s.qemu_pid(i) else {
                return false;
            };
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("vm-crashed", "hypervisor", 20)}));
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            s.vms[i].shell = None;
            busy(s, i, 45);
        }
        ("disk-full", Some(i)) => {
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("disk-full", "guest-storage", 40)}));
            s.type_in(i, "dd if=/dev/zero of=/data/fill bs=1M 2>/dev/null; sync");
            s.heals.push(heal(
                Some(i),
                Some("disk-full"),
                45,
                HealKind::Shell("rm -f /data/fill; sync"),
            ));
            busy(s, i, 60);
        }
        ("oom", Some(i)) => {
            s.note(serde_json::json!({"what": what, "vm": name, "expect": expect("memory-exhaustion", "guest-resources", 40)}));
            s.type_in(i, "tail /dev/zero");
            busy(s, i, 60);
        }
        ("suspend", Some(i)) => {
            let hold = 5 + rng.below(8);
            s.note(serde_json::json!({"what": what, "vm": name, "expect": null, "end": now_ms() + hold * 1000}));
            let _ = virsh(&["suspend", &name]);
            s.heals.push(heal(Some(i), None, hold, HealKind::Resume));
            busy(s, i, hold + 15);
        }
        ("maintenance", Some(i)) => {
            let hold = 8 + rng.below(8);
            let out = common::ctl(&s.sock(), &["maintenance", &name, "on"]);
            if !out.status.success() {
                return false;
            }
            // A fault while in maintenance: nothing is done until it ends,
            // then it is repaired.
            s.note(
                serde_json::json!({"what": what, "vm": name, "end": now_ms() + hold * 1000,
                "expect": expect("service-down", "guest-service", hold + 20)}),
            );
            s.type_in(i, "killall testsvc");
            s.heals
                .push(heal(Some(i), None, hold, HealKind::MaintenanceOff));
            busy(s, i, hold + 30);
        }
        ("vigild-kill", None) => {
            let _ = s.vigild.kill();
            let _ = s.vigild.wait();
            let t = now_ms();
            std::thread::sleep(Duration::from_millis(500 + rng.below(2_500)));
            s.check_journal("after vigild was killed");
            s.start_vigild();
            s.note(serde_json::json!({"what": what, "vm": "*", "t": t, "end": now_ms()}));
        }
        ("libvirtd-restart", None) => {
            let pid = std::fs::read_to_string("/run/vigil-libvirtd.pid").unwrap_or_default();
            let pid = pid.trim().to_string();
            if pid.is_empty()
                || !Command::new("kill")
                    .arg(&pid)
                    .status()
                    .is_ok_and(|s| s.success())
            {
                return false;
            }
            let hold = 3 + rng.below(5);
            s.note(
                serde_json::json!({"what": what, "vm": "*", "end": now_ms() + hold * 1000 + 3000}),
            );
            s.heals
                .push(heal(None, None, hold, HealKind::StartLibvirtd));
        }
        ("cpu-starve", None) => {
            let hold = 15 + rng.below(15);
            let loops: Vec<Child> = (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect();
            s.note(serde_json::json!({"what": what, "vm": "*", "end": now_ms() + hold * 1000}));
            s.heals
                .push(heal(None, None, hold, HealKind::StopBusy(loops)));
        }
        ("flood", Some(i)) => {
            // A hostile "guest": connections to the VM's agent socket that
            // send garbage, as fast as they are taken, for a few seconds.
            let path = s.vms[i].dir.join("vm.vsock_1217");
            let hold = 5;
            s.note(serde_json::json!({"what": what, "vm": name, "expect": null, "end": now_ms() + hold * 1000}));
            let until = Instant::now() + secs(hold);
            std::thread::spawn(move || {
                let junk = vec![0xa5u8; 64 * 1024];
                while Instant::now() < until {
                    if let Ok(mut c) = UnixStream::connect(&path) {
                        let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
                        let _ = c.write_all(&junk);
                    }
                }
            });
            s.heals.push(heal(Some(i), None, hold, HealKind::Done));
            busy(s, i, hold + 5);
        }
        _ => return false,
    }
    true
}

/// Do the heals that are due.
fn run_heals(s: &mut Soak) {
    let now = Instant::now();
    let mut due = Vec::new();
    let mut keep = Vec::new();
    for h in std::mem::take(&mut s.heals) {
        let seen = match (h.vm, h.when_fault) {
            (Some(i), Some(kind)) => s.vigild_up() && s.status(i)["fault"] == kind,
            _ => false,
        };
        if seen || now >= h.deadline {
            due.push(h);
        } else {
            keep.push(h);
        }
    }
    s.heals = keep;
    for h in due {
        let name = h.vm.map(|i| s.vms[i].name.clone());
        match h.what {
            HealKind::Shell(cmd) => {
                if let Some(i) = h.vm {
                    s.type_in(i, cmd);
                }
            }
            HealKind::Cont(pid) => {
                let _ = Command::new("kill").args(["-CONT", &pid]).status();
            }
            HealKind::Resume => {
                let _ = virsh(&["resume", name.as_deref().unwrap_or("")]);
            }
            HealKind::MaintenanceOff => {
                let n = name.clone().unwrap_or_default();
                // vigild may be down (killed): try until it answers.
                let until = Instant::now() + Duration::from_secs(30);
                while !common::ctl(&s.sock(), &["maintenance", &n, "off"])
                    .status
                    .success()
                    && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(300));
                }
                s.note(serde_json::json!({"what": "maintenance-off", "vm": n}));
            }
            HealKind::StartLibvirtd => {
                let ok = Command::new("libvirtd")
                    .args(["-d", "-p", "/run/vigil-libvirtd.pid"])
                    .status()
                    .is_ok_and(|st| st.success());
                assert!(ok, "libvirtd did not start again");
            }
            HealKind::StopBusy(mut children) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            HealKind::Done => {}
        }
    }
}
