//! Test helper for the real-VM fault matrix (not shipped): a SCHED_FIFO
//! busy loop at the highest priority. With RT throttling off
//! (`sched_rt_runtime_us = -1`) on a one-vCPU guest it takes the CPU from
//! everything else: vCPU time advances while nothing else runs — a guest
//! hang as the host sees it. (busybox has no `chrt`.)

fn main() {
    // SAFETY: sched_get_priority_max and sched_setscheduler only read the
    // policy value and the param struct passed by reference.
    let rc = unsafe {
        let param = nix::libc::sched_param {
            sched_priority: nix::libc::sched_get_priority_max(nix::libc::SCHED_FIFO),
        };
        nix::libc::sched_setscheduler(0, nix::libc::SCHED_FIFO, &param)
    };
    if rc != 0 {
        eprintln!(
            "rt-spin: sched_setscheduler failed: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
