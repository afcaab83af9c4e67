//! Domain events from libvirt: a small safe wrapper over
//! `virConnectDomainEventRegisterAny` (the `virt` crate has none), turning
//! lifecycle, reboot, watchdog, I/O-error and device callbacks into [`HvEvent`]s on
//! a channel.
//!
//! libvirt needs an event loop: [`start_event_loop`] registers the default
//! implementation (this must happen before `Connect::open`) and runs it on a
//! thread of its own.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::mpsc::Sender;

use virt::connect::Connect;
use virt::sys;

use crate::engine::{DomainState, PauseReason, StopReason};

/// A domain event, as the daemon consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvEvent {
    /// The domain's state changed to this.
    State(String, DomainState),
    /// The domain was defined or undefined: re-list.
    Definitions,
    /// The guest reset (reboot event).
    Rebooted(String),
    /// A device was attached to or detached from the domain (its vNICs
    /// may have changed).
    Devices(String),
}

/// Map a lifecycle event and detail to what the daemon needs: pure.
pub fn map_lifecycle(event: c_int, detail: c_int) -> Option<DomainState> {
    let (event, detail) = (event as u32, detail as u32);
    Some(match event {
        sys::VIR_DOMAIN_EVENT_STARTED | sys::VIR_DOMAIN_EVENT_RESUMED => DomainState::Running,
        sys::VIR_DOMAIN_EVENT_SUSPENDED => DomainState::Paused(match detail {
            sys::VIR_DOMAIN_EVENT_SUSPENDED_PAUSED => PauseReason::User,
            sys::VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED | sys::VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY => {
                PauseReason::Migration
            }
            sys::VIR_DOMAIN_EVENT_SUSPENDED_IOERROR => PauseReason::IoError,
            sys::VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG => PauseReason::Watchdog,
            sys::VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT => PauseReason::Snapshot,
            _ => PauseReason::Other,
        }),
        sys::VIR_DOMAIN_EVENT_STOPPED => DomainState::ShutOff(match detail {
            sys::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN => StopReason::Shutdown,
            sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED => StopReason::Destroyed,
            sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED => StopReason::Crashed,
            sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED => StopReason::Migrated,
            sys::VIR_DOMAIN_EVENT_STOPPED_SAVED => StopReason::Saved,
            sys::VIR_DOMAIN_EVENT_STOPPED_FAILED => StopReason::Failed,
            sys::VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT => StopReason::FromSnapshot,
            _ => StopReason::Other,
        }),
        sys::VIR_DOMAIN_EVENT_CRASHED => DomainState::Crashed {
            panicked: detail == sys::VIR_DOMAIN_EVENT_CRASHED_PANICKED,
        },
        _ => return None,
    })
}

/// Register libvirt's default event loop and run it on a thread. Call once,
/// before opening the connection events are registered on.
pub fn start_event_loop() -> Result<(), String> {
    virt::event::event_register_default_impl().map_err(|e| e.message().to_string())?;
    std::thread::Builder::new()
        .name("libvirt-events".into())
        .spawn(|| loop {
            if let Err(e) = virt::event::event_run_default_impl() {
                log::error!("libvirt event loop failed: {}", e.message());
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Callback state owned by libvirt between register and free.
struct Opaque {
    tx: Sender<HvEvent>,
}

/// The domain's name from a callback's borrowed domain pointer.
///
/// # Safety
/// `dom` must be the valid domain pointer libvirt passed to the callback.
unsafe fn name_of(dom: sys::virDomainPtr) -> Option<String> {
    // SAFETY: the caller guarantees `dom` is valid for the callback's
    // duration; virDomainGetName returns a pointer owned by the domain
    // object (not freed by us) or NULL.
    let p = unsafe { sys::virDomainGetName(dom) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, valid while `dom` is.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// # Safety
/// `opaque` must be the `Opaque` registered with this callback.
unsafe fn sender<'a>(opaque: *mut c_void) -> &'a Sender<HvEvent> {
    // SAFETY: libvirt passes back the pointer we registered; it stays valid
    // until the free callback runs, after which no callback is invoked.
    unsafe { &(*(opaque as *const Opaque)).tx }
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: libvirt calls with a valid domain and our opaque pointer.
    let (name, tx) = unsafe { (name_of(dom), sender(opaque)) };
    let ev = match (name, event as u32) {
        (_, sys::VIR_DOMAIN_EVENT_DEFINED | sys::VIR_DOMAIN_EVENT_UNDEFINED) => {
            Some(HvEvent::Definitions)
        }
        (Some(n), _) => map_lifecycle(event, detail).map(|s| HvEvent::State(n, s)),
        (None, _) => None,
    };
    if let Some(ev) = ev {
        let _ = tx.send(ev);
    }
    0
}

unsafe extern "C" fn on_device(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: as above.
    let (name, tx) = unsafe { (name_of(dom), sender(opaque)) };
    if let Some(n) = name {
        let _ = tx.send(HvEvent::Devices(n));
    }
}

unsafe extern "C" fn on_reboot(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    opaque: *mut c_void,
) {
    // SAFETY: as above.
    let (name, tx) = unsafe { (name_of(dom), sender(opaque)) };
    if let Some(n) = name {
        let _ = tx.send(HvEvent::Rebooted(n));
    }
}

unsafe extern "C" fn on_watchdog(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    action: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: as above.
    let (name, tx) = unsafe { (name_of(dom), sender(opaque)) };
    if let Some(n) = name {
        // The device paused the guest: evidence of a hang. Any other action
        // (reset, poweroff) shows up as its own lifecycle/reboot event.
        if action as u32 == sys::VIR_DOMAIN_EVENT_WATCHDOG_PAUSE {
            let _ = tx.send(HvEvent::State(
                n,
                DomainState::Paused(PauseReason::Watchdog),
            ));
        }
    }
}

unsafe extern "C" fn on_io_error(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _src: *const c_char,
    _alias: *const c_char,
    action: c_int,
    reason: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: as above.
    let (name, tx) = unsafe { (name_of(dom), sender(opaque)) };
    // SAFETY: checked non-null; libvirt passes a NUL-terminated string.
    let no_space = !reason.is_null() && unsafe { CStr::from_ptr(reason) }.to_bytes() == b"enospc";
    if let (Some(n), true) = (name, action as u32 == sys::VIR_DOMAIN_EVENT_IO_ERROR_PAUSE) {
        let why = if no_space {
            PauseReason::NoSpace
        } else {
            PauseReason::IoError
        };
        let _ = tx.send(HvEvent::State(n, DomainState::Paused(why)));
    }
}

unsafe extern "C" fn free_opaque(opaque: *mut c_void) {
    // SAFETY: `opaque` came from Box::into_raw in `register`; libvirt calls
    // this exactly once when the callback is deregistered.
    drop(unsafe { Box::from_raw(opaque as *mut Opaque) });
}

/// Registered callbacks; deregistered on drop.
///
/// It holds its own reference to the connection, so the connection outlives
/// the callbacks whoever else closes it: when a deregistration drops the last
/// reference, libvirt disposes of the connection while holding the remote
/// driver's lock and deadlocks (seen with `qemu:///system`: vigild hung on
/// SIGTERM once the backend thread had closed its connection).
pub struct Registration {
    conn: Connect,
    ids: Vec<c_int>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: `self.conn` is a live reference to the connection; it is
        // released only after this loop, when the field drops.
        let raw = unsafe { self.conn.as_ptr() };
        for id in &self.ids {
            // SAFETY: `raw` is live (above) and the ids are ours.
            unsafe { sys::virConnectDomainEventDeregisterAny(raw, *id) };
        }
    }
}

/// Register lifecycle, reboot, watchdog, I/O-error and device callbacks on `conn`,
/// sending events to `tx`; they stay registered until the returned value is
/// dropped.
pub fn register(conn: &Connect, tx: Sender<HvEvent>) -> Result<Registration, String> {
    // A new reference (virConnectRef), released after deregistration.
    let conn = conn.clone();
    // SAFETY: the pointer is only used while `conn` lives, and `conn` moves
    // into the registration, which deregisters before releasing it.
    let raw = unsafe { conn.as_ptr() };
    let mut reg = Registration {
        conn,
        ids: Vec::new(),
    };
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
    // SAFETY: each callback is transmuted to libvirt's generic callback type,
    // as libvirt's API requires (it calls it with the event-specific
    // signature that matches the event id).
    let callbacks: [(u32, Generic); 6] = unsafe {
        [
            (
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                std::mem::transmute::<*const (), Generic>(on_lifecycle as *const ()),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_REBOOT,
                std::mem::transmute::<*const (), Generic>(on_reboot as *const ()),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_WATCHDOG,
                std::mem::transmute::<*const (), Generic>(on_watchdog as *const ()),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON,
                std::mem::transmute::<*const (), Generic>(on_io_error as *const ()),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                std::mem::transmute::<*const (), Generic>(on_device as *const ()),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                std::mem::transmute::<*const (), Generic>(on_device as *const ()),
            ),
        ]
    };
    for (id, cb) in callbacks {
        let opaque = Box::into_raw(Box::new(Opaque { tx: tx.clone() })) as *mut c_void;
        // SAFETY: `raw` is a live connection; on success libvirt owns
        // `opaque` and frees it through `free_opaque`.
        let r = unsafe {
            sys::virConnectDomainEventRegisterAny(
                raw,
                std::ptr::null_mut(),
                id as c_int,
                Some(cb),
                opaque,
                Some(free_opaque),
            )
        };
        if r < 0 {
            // SAFETY: libvirt did not take ownership of `opaque`.
            drop(unsafe { Box::from_raw(opaque as *mut Opaque) });
            return Err(format!(
                "cannot register domain event {id}: {}",
                virt::error::Error::last_error().message()
            ));
        }
        reg.ids.push(r);
    }
    Ok(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_mapping() {
        let cases = [
            (sys::VIR_DOMAIN_EVENT_STARTED, 0, Some(DomainState::Running)),
            (
                sys::VIR_DOMAIN_EVENT_STOPPED,
                sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
                Some(DomainState::ShutOff(StopReason::Destroyed)),
            ),
            (
                sys::VIR_DOMAIN_EVENT_SUSPENDED,
                sys::VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
                Some(DomainState::Paused(PauseReason::IoError)),
            ),
            (
                sys::VIR_DOMAIN_EVENT_CRASHED,
                sys::VIR_DOMAIN_EVENT_CRASHED_PANICKED,
                Some(DomainState::Crashed { panicked: true }),
            ),
            (sys::VIR_DOMAIN_EVENT_DEFINED, 0, None),
        ];
        for (e, d, want) in cases {
            assert_eq!(map_lifecycle(e as c_int, d as c_int), want, "{e}/{d}");
        }
    }
}
