//! Agent sessions kept across a vigild restart (an upgrade, a crash
//! restart): on stop, every connection goes to the service manager's file
//! descriptor store (systemd's `FDSTORE=1`) with one memfd of what the next
//! vigild needs to go on (the VM, the handshake, the bytes read and not
//! used); on start they are taken back and served where they stopped. No
//! guest hears anything: a paused VM's vsock is not disturbed (a close
//! written to it can break it until destroy + start), and a host of many
//! VMs has no reconnect storm.
//!
//! Used when the service manager keeps descriptors: `$NOTIFY_SOCKET` set
//! and `$FDSTORE` (its `FileDescriptorStoreMax=`, exported by systemd 254
//! and later) non-zero. Otherwise vigild closes sessions on exit, running
//! guests' first.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use sd_notify::NotifyState;
use serde::{Deserialize, Serialize};

use super::session::Adopted;

/// The state memfd's name in the store.
const STATE: &str = "vigil-state";
/// Prefix of a session's name in the store.
const SESSION: &str = "vigil-s";
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
    if sessions.len() + 1 > capacity() {
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

/// Sessions a previous vigild stored, taken out of the store (so the
/// service manager no longer holds them open): (VM, what to go on with,
/// the connection). Anything unreadable is closed and said.
pub fn take() -> Vec<(String, Adopted, OwnedFd)> {
    // SAFETY: called once, before the runtime or any thread starts.
    let fds: Vec<(RawFd, String)> =
        match unsafe { sd_notify::listen_fds_with_names_and_unset_env() } {
            Ok(fds) => fds.collect(),
            Err(e) => {
                log::warn!("cannot read the service manager's descriptors: {e}");
                return Vec::new();
            }
        };
    let mut state = None;
    let mut conns = std::collections::BTreeMap::new();
    for (raw, name) in fds {
        // SAFETY: LISTEN_FDS names descriptors passed to this process, each
        // once; we own them from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(&name)]);
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
