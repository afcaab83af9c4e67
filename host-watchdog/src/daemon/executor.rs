//! The executor: hypervisor actions run here, concurrently across VMs (a
//! small pool of threads, each with a handle on the same connection),
//! strictly one at a time per VM, each given a bounded time. A `destroy` of
//! a QEMU stuck in D state can take 30 s and more: it delays nothing else,
//! neither the polls nor another VM's recovery. An action past its time is
//! reported failed at once; its VM stays busy until the call returns, and
//! the late result is said, not applied twice.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::act::act;
use super::backend_thread::BackendReq;
use crate::backend::Hypervisor;

/// Threads running actions.
pub const WORKERS: usize = 4;

/// An action's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Action id.
    pub id: u64,
    /// Domain.
    pub vm: String,
    /// Success.
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// The action a VM is busy with.
struct Running {
    id: u64,
    started: Instant,
    /// Its time ran out and that was reported.
    reported: bool,
}

/// Runs actions; see the module doc.
pub struct Executor {
    jobs: Sender<BackendReq>,
    timeout: Duration,
    running: HashMap<String, Running>,
    queued: HashMap<String, VecDeque<BackendReq>>,
}

impl Executor {
    /// `workers` threads, each with its own handle on `hv`'s connection;
    /// each result goes to `finished` (wrapped by `wrap`).
    pub fn new(
        hv: &dyn Hypervisor,
        workers: usize,
        timeout: Duration,
        finished: Sender<BackendReq>,
    ) -> Executor {
        let (jobs, rx) = std::sync::mpsc::channel::<BackendReq>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..workers {
            let mut h = hv.worker();
            let (rx, finished) = (rx.clone(), finished.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("executor-{n}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for a job.
                    let req = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(req) = req else { return };
                    let BackendReq::Act { id, ref vm, .. } = req else {
                        continue;
                    };
                    let vm = vm.clone();
                    let (ok, detail) = match act(h.as_mut(), &req) {
                        Ok(d) => (true, d),
                        Err(d) => (false, d),
                    };
                    let done = Done { id, vm, ok, detail };
                    if finished.send(BackendReq::Finished(done)).is_err() {
                        return;
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start executor thread {n}: {e}");
            }
        }
        Executor {
            jobs,
            timeout,
            running: HashMap::new(),
            queued: HashMap::new(),
        }
    }

    /// Run an action now, or after the VM's current one.
    pub fn submit(&mut self, req: BackendReq) {
        let BackendReq::Act { vm, .. } = &req else {
            return;
        };
        if self.running.contains_key(vm) {
            self.queued.entry(vm.clone()).or_default().push_back(req);
        } else {
            self.start(req);
        }
    }

    fn start(&mut self, req: BackendReq) {
        let BackendReq::Act { id, vm, .. } = &req else {
            return;
        };
        self.running.insert(
            vm.clone(),
            Running {
                id: *id,
                started: Instant::now(),
                reported: false,
            },
        );
        let _ = self.jobs.send(req);
    }

    /// A worker finished: what to tell the core (nothing when the action's
    /// time had run out and that was told), and the VM's next action starts.
    pub fn finished(&mut self, d: Done) -> Option<Done> {
        let was = self.running.remove(&d.vm);
        if let Some(next) = self.queued.get_mut(&d.vm).and_then(VecDeque::pop_front) {
            self.start(next);
        }
        self.queued.retain(|_, q| !q.is_empty());
        match was {
            Some(r) if r.reported && r.id == d.id => {
                log::warn!(
                    "vm={} action=#{} returned after its time had run out: ok={} {}",
                    d.vm,
                    d.id,
                    d.ok,
                    d.detail
                );
                None
            }
            _ => Some(d),
        }
    }

    /// Actions past their time, reported failed now (their VMs stay busy
    /// until the calls return).
    pub fn expired(&mut self, now: Instant) -> Vec<Done> {
        let mut out = Vec::new();
        for (vm, r) in self.running.iter_mut() {
            if !r.reported && now.duration_since(r.started) >= self.timeout {
                r.reported = true;
                out.push(Done {
                    id: r.id,
                    vm: vm.clone(),
                    ok: false,
                    detail: format!(
                        "no answer from the hypervisor within {} s; the VM takes no other action until it returns",
                        self.timeout.as_secs()
                    ),
                });
            }
        }
        out
    }

    /// Whether any action is running or waiting.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, DomainDef, DomainPoll};
    use crate::engine::ActionKind;

    /// A hypervisor whose destroy of "stuck" takes `stuck_ms`; every call
    /// is logged (VM, what, when it ended).
    #[derive(Clone)]
    struct Slow {
        stuck_ms: u64,
        log: Arc<Mutex<Vec<(String, &'static str)>>>,
    }

    impl Slow {
        fn did(&self, vm: &str, what: &'static str) -> Result<(), BackendError> {
            if vm == "stuck" && what == "destroy" {
                std::thread::sleep(Duration::from_millis(self.stuck_ms));
            }
            self.log.lock().unwrap().push((vm.to_string(), what));
            Ok(())
        }
    }

    impl Hypervisor for Slow {
        fn worker(&self) -> Box<dyn Hypervisor> {
            Box::new(self.clone())
        }
        fn list(&mut self) -> Result<Vec<DomainDef>, BackendError> {
            Ok(vec![])
        }
        fn poll(&mut self, _: &DomainDef) -> Result<DomainPoll, BackendError> {
            Err(BackendError::NoDomain("x".into()))
        }
        fn reset(&mut self, vm: &str) -> Result<(), BackendError> {
            self.did(vm, "reset")
        }
        fn reboot(&mut self, vm: &str) -> Result<(), BackendError> {
            self.did(vm, "reboot")
        }
        fn shutdown(&mut self, vm: &str) -> Result<(), BackendError> {
            self.did(vm, "shutdown")
        }
        fn destroy(&mut self, vm: &str) -> Result<(), BackendError> {
            self.did(vm, "destroy")
        }
        fn start(&mut self, vm: &str) -> Result<(), BackendError> {
            self.did(vm, "start")
        }
        fn resume(&mut self, vm: &str) -> Result<(), BackendError> {
            self.did(vm, "resume")
        }
        fn set_memory(&mut self, vm: &str, _: u64) -> Result<(), BackendError> {
            self.did(vm, "set-memory")
        }
        fn set_vcpus(&mut self, vm: &str, _: u32) -> Result<(), BackendError> {
            self.did(vm, "set-vcpus")
        }
        fn snapshots(&mut self, _: &str) -> Result<Vec<String>, BackendError> {
            Ok(vec![])
        }
        fn snapshot_create(&mut self, vm: &str, _: &str) -> Result<(), BackendError> {
            self.did(vm, "snapshot-create")
        }
        fn snapshot_revert(&mut self, vm: &str, _: &str) -> Result<(), BackendError> {
            self.did(vm, "snapshot-revert")
        }
    }

    fn req(id: u64, vm: &str, kind: ActionKind) -> BackendReq {
        BackendReq::Act {
            id,
            vm: vm.into(),
            kind,
            memory_kib: None,
            snapshot: None,
            now: 0,
            resume: false,
        }
    }

    /// Drive the executor as the backend thread does, until `n` results.
    fn run(ex: &mut Executor, rx: &std::sync::mpsc::Receiver<BackendReq>, n: usize) -> Vec<Done> {
        let mut out = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while out.len() < n && Instant::now() < end {
            if let Ok(BackendReq::Finished(d)) = rx.recv_timeout(Duration::from_millis(20)) {
                out.extend(ex.finished(d));
            }
            out.extend(ex.expired(Instant::now()));
        }
        out
    }

    /// A destroy stuck for 1.5 s holds up no other VM's action; one VM's
    /// actions run in order, one at a time.
    #[test]
    fn a_stuck_action_delays_no_other_vm_and_one_vm_goes_in_order() {
        let hv = Slow {
            stuck_ms: 1_500,
            log: Arc::default(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ex = Executor::new(&hv, WORKERS, Duration::from_secs(30), tx);
        ex.submit(req(1, "stuck", ActionKind::Destroy));
        ex.submit(req(2, "stuck", ActionKind::Start));
        ex.submit(req(3, "web", ActionKind::Reboot));
        ex.submit(req(4, "db", ActionKind::Start));
        let done: Vec<u64> = run(&mut ex, &rx, 4).iter().map(|d| d.id).collect();
        // The other VMs' actions (in either order: they run side by side)
        // finish before the stuck one; the stuck VM's go in order.
        assert_eq!(done.len(), 4, "{done:?}");
        let mut others = done[..2].to_vec();
        others.sort_unstable();
        assert_eq!((others.as_slice(), &done[2..]), (&[3, 4][..], &[1, 2][..]));
        let log = hv.log.lock().unwrap().clone();
        let stuck: Vec<&str> = log
            .iter()
            .filter(|(v, _)| v == "stuck")
            .map(|(_, w)| *w)
            .collect();
        assert_eq!(stuck, ["destroy", "start"]);
        assert!(!ex.busy());
    }

    /// Past its time an action is reported failed at once; its late result
    /// is not reported again; the VM's next action waits for it.
    #[test]
    fn an_action_past_its_time_fails_and_its_late_result_is_not_applied() {
        // Wide margins: the machine may be busy (the timeout is 300 ms,
        // the stuck call takes 3 s).
        let hv = Slow {
            stuck_ms: 3_000,
            log: Arc::default(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ex = Executor::new(&hv, 2, Duration::from_millis(300), tx);
        let t = Instant::now();
        ex.submit(req(1, "stuck", ActionKind::Destroy));
        ex.submit(req(2, "stuck", ActionKind::Start));
        let first = run(&mut ex, &rx, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, 1);
        assert!(
            !first[0].ok && first[0].detail.contains("no answer"),
            "{first:?}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(2_500),
            "{:?}",
            t.elapsed()
        );
        assert!(
            hv.log.lock().unwrap().is_empty(),
            "the start waits for the destroy"
        );
        let rest = run(&mut ex, &rx, 1);
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].id, rest[0].ok), (2, true));
        assert_eq!(hv.log.lock().unwrap().len(), 2);
    }
}
