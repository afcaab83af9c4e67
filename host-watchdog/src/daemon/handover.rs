//! Agent sessions kept across a vigild restart (an upgrade, a crash
//! restart): on stop, every connection goes to the service manager's file
//! descriptor store (systemd's `FDSTORE=1`) with one memfd of what the next
//! vigild needs to go on (the VM, the handshake, the bytes read and not
//! used); on start they are taken back and served where they stopped. No
//! guest hears anything: a paused VM's vsock is not disturbed (a close
//! written to it can break it until destroy + start), and a host of many
//! VMs has no reconnect storm.
//!
//! A vigild that is killed hands nothing over, so every session is also
//! kept in the store from its handshake on (`vigil-o<session>-<VM in
//! hex>`) and taken out when vigild ends it (ended with a shutdown, which
//! reaches the guest whatever else holds the connection). After a crash
//! the next vigild finds these without a state: they cannot be served on
//! (where the stream stood is unknown), but they are not closed while
//! their guest is paused either — the close would reach the paused VM's
//! vsock and break it — only once it runs again (its agent then
//! reconnects). Their duplicates of handed-over sessions are dropped.
//!
//! Used when the service manager keeps descriptors: `$NOTIFY_SOCKET` set
//! and `$FDSTORE` (its `FileDescriptorStoreMax=`, exported by systemd 254
//! and later) non-zero. Otherwise vigild closes sessions on exit, running
//! guests' first.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use sd_notify::NotifyState;
use serde::{Deserialize, Serialize};

use super::session::Adopted;

/// The state memfd's name in the store.
const STATE: &str = "vigil-state";
/// Prefix of a session's name in the store.
const SESSION: &str = "vigil-s";
/// Prefix of a live session's name in the store (kept while it is served).
const LIVE: &str = "vigil-o";
/// Longest descriptor name the service manager takes.
const MAX_NAME: usize = 255;
/// Largest state accepted back (64 KiB of unread bytes per session at most).
const MAX_STATE: u64 = 256 << 20;

/// One session as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// Its descriptor's name in the store.
    name: String,
    /// The VM it speaks for.
    vm: String,
    /// What the next vigild goes on with.
    session: Adopted,
}

/// How many descriptors the service manager keeps for us (0: none).
pub fn capacity() -> usize {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return 0;
    }
    std::env::var("FDSTORE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Hand `sessions` to the service manager; how many it took. All or
/// nothing: the state goes last, so a next vigild that finds no state
/// takes none of them.
pub fn store(sessions: Vec<(String, Adopted, OwnedFd)>) -> std::io::Result<usize> {
    // Each session's live entry is in the store already.
    if 2 * sessions.len() + 1 > capacity() {
        return Err(std::io::Error::other(format!(
            "{} sessions do not fit the service manager's store ({})",
            sessions.len(),
            capacity()
        )));
    }
    let mut stored = Vec::with_capacity(sessions.len());
    for (i, (vm, session, fd)) in sessions.into_iter().enumerate() {
        let name = format!("{SESSION}{i}");
        sd_notify::notify_with_fds(
            &[NotifyState::FdStore, NotifyState::FdName(&name)],
            &[fd.as_fd()],
        )?;
        stored.push(Stored { name, vm, session });
    }
    let text = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
    let memfd = nix::sys::memfd::memfd_create(STATE, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut f = std::fs::File::from(memfd);
    f.write_all(&text)?;
    sd_notify::notify_with_fds(
        &[NotifyState::FdStore, NotifyState::FdName(STATE)],
        &[f.as_fd()],
    )?;
    Ok(stored.len())
}

/// Keep a live session's connection in the store while it is served, so
/// that a vigild killed meanwhile closes nothing; its name, to
/// [`forget`] it when the session ends (none: no store, or the VM's name
/// too long for one).
pub fn keep(vm: &str, session: u64, fd: BorrowedFd<'_>) -> Option<String> {
    if capacity() == 0 || !keep_allowed(vm, std::time::Instant::now()) {
        return None;
    }
    let hex: String = vm.bytes().map(|b| format!("{b:02x}")).collect();
    let name = format!("{LIVE}{session}-{hex}");
    if name.len() > MAX_NAME {
        return None;
    }
    let state = [NotifyState::FdStore, NotifyState::FdName(&name)];
    match sd_notify::notify_with_fds(&state, &[fd]) {
        Ok(()) => Some(name),
        Err(e) => {
            log::warn!("vm={vm}: its session cannot be kept in the store: {e}");
            None
        }
    }
}

/// A guest reconnecting in a loop makes no more than one store request a
/// second (each is a message to the service manager); a session not kept
/// is only closed by a crash, as without a store. One entry per VM.
fn keep_allowed(vm: &str, now: std::time::Instant) -> bool {
    static LAST: std::sync::Mutex<std::collections::BTreeMap<String, std::time::Instant>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let Ok(mut last) = LAST.lock() else {
        return false;
    };
    match last.get(vm) {
        Some(t) if now.duration_since(*t) < std::time::Duration::from_secs(1) => false,
        _ => {
            last.insert(vm.to_string(), now);
            true
        }
    }
}

/// The session kept as `name` ended: out of the store.
pub fn forget(name: &str) {
    let _ = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]);
}

/// The VM a live session's name names.
fn live_vm(name: &str) -> Option<String> {
    let (_, hex) = name.strip_prefix(LIVE)?.split_once('-')?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Which socket a descriptor is (duplicates share it).
fn inode(fd: &OwnedFd) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
}

/// What the store held at start.
#[derive(Default)]
pub struct Taken {
    /// Sessions a stopping vigild handed over: (VM, what to go on with,
    /// the connection).
    pub sessions: Vec<(String, Adopted, OwnedFd)>,
    /// Connections a killed vigild left, by VM: not to be served, to be
    /// closed once their guest runs.
    pub orphans: Vec<(String, OwnedFd)>,
}

/// Everything a previous vigild stored, taken out of the store (so the
/// service manager no longer holds it open). Anything unreadable is
/// closed and said.
pub fn take() -> Taken {
    // SAFETY: called once, before the runtime or any thread starts.
    let fds: Vec<(RawFd, String)> =
        match unsafe { sd_notify::listen_fds_with_names_and_unset_env() } {
            Ok(fds) => fds.collect(),
            Err(e) => {
                log::warn!("cannot read the service manager's descriptors: {e}");
                return Taken::default();
            }
        };
    let mut live = Vec::new();
    let mut others = Vec::new();
    for (raw, name) in fds {
        // SAFETY: LISTEN_FDS names descriptors passed to this process, each
        // once; we own them from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(&name)]);
        match live_vm(&name) {
            Some(vm) => live.push((vm, fd)),
            None => others.push((name, fd)),
        }
    }
    let sessions = handed_over(others);
    // A live entry of a session handed over is a duplicate: dropping it
    // closes nothing.
    let served: Vec<u64> = sessions.iter().filter_map(|(_, _, fd)| inode(fd)).collect();
    let orphans: Vec<(String, OwnedFd)> = live
        .into_iter()
        .filter(|(_, fd)| inode(fd).is_none_or(|i| !served.contains(&i)))
        .collect();
    if !orphans.is_empty() {
        log::warn!(
            "{} agent connections left by a vigild that did not stop cleanly: each is closed once its guest runs, and its agent reconnects",
            orphans.len()
        );
    }
    Taken { sessions, orphans }
}

/// The sessions of a hand-over (its state and its connections).
fn handed_over(fds: Vec<(String, OwnedFd)>) -> Vec<(String, Adopted, OwnedFd)> {
    let mut state = None;
    let mut conns = std::collections::BTreeMap::new();
    for (name, fd) in fds {
        if name == STATE {
            state = Some(fd);
        } else if name.starts_with(SESSION) {
            conns.insert(name, fd);
        }
    }
    let Some(state) = state else {
        if !conns.is_empty() {
            log::warn!(
                "{} stored sessions without their state: closed",
                conns.len()
            );
        }
        return Vec::new();
    };
    let stored: Vec<Stored> = match read_state(state) {
        Ok(s) => s,
        Err(e) => {
            log::warn!(
                "stored session state unreadable ({e}): {} sessions closed",
                conns.len()
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for s in stored {
        match conns.remove(&s.name) {
            Some(fd) => out.push((s.vm, s.session, fd)),
            None => log::warn!("vm={}: stored session {} missing", s.vm, s.name),
        }
    }
    if !conns.is_empty() {
        log::warn!("{} stored sessions not in the state: closed", conns.len());
    }
    out
}

fn read_state(fd: OwnedFd) -> anyhow::Result<Vec<Stored>> {
    let mut f = std::fs::File::from(fd);
    f.rewind()?;
    let mut text = Vec::new();
    f.take(MAX_STATE).read_to_end(&mut text)?;
    Ok(serde_json::from_slice(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_reconnecting_in_a_loop_is_kept_once_a_second() {
        let t = std::time::Instant::now();
        assert!(keep_allowed("loop-vm", t));
        assert!(!keep_allowed(
            "loop-vm",
            t + std::time::Duration::from_millis(300)
        ));
        assert!(keep_allowed("other-vm", t));
        assert!(keep_allowed(
            "loop-vm",
            t + std::time::Duration::from_millis(1100)
        ));
    }

    #[test]
    fn a_live_sessions_name_gives_back_its_vm() {
        let hex: String = "web-01.é".bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            live_vm(&format!("{LIVE}7-{hex}")).as_deref(),
            Some("web-01.é")
        );
        for bad in [
            "vigil-s0",
            "vigil-state",
            "vigil-o7",
            "vigil-o7-6",
            "vigil-o7-zz",
            "vigil-o7-ff",
        ] {
            assert_eq!(live_vm(bad), None, "{bad}");
        }
    }
}
