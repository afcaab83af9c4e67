//! The connection every handle of one [`super::Libvirt`] shares, and what
//! it takes to open it again: libvirtd restarted (an upgrade, a crash)
//! leaves a connection that is dead for good; [`Link::reconnect`] opens a
//! new one for every handle at once and registers the event callbacks on
//! it again.

use std::sync::mpsc::Sender;
use std::sync::Mutex;

use virt::connect::Connect;

use super::super::events::{register, HvEvent, Registration};
use super::super::BackendError;

pub(super) struct Link {
    uri: String,
    /// The connection (none: not open yet, or lost and not back), and its
    /// generation (each reconnect a new one).
    current: Mutex<(u64, Option<Connect>)>,
    /// Where events go, and their registration on the current connection.
    events: Mutex<Option<(Sender<HvEvent>, Option<Registration>)>>,
}

impl Link {
    /// Not connected yet.
    pub(super) fn new(uri: &str) -> Link {
        Link {
            uri: uri.into(),
            current: Mutex::new((0, None)),
            events: Mutex::new(None),
        }
    }

    fn lost(&self) -> BackendError {
        BackendError::Connect {
            uri: self.uri.clone(),
            message: "not connected".into(),
        }
    }

    fn events_error(&self, message: String) -> BackendError {
        BackendError::Connect {
            uri: self.uri.clone(),
            message: format!("events: {message}"),
        }
    }

    /// Open the connection again, for every handle, and register the event
    /// callbacks on it (when events are watched).
    pub(super) fn reconnect(&self) -> Result<(), BackendError> {
        let conn = Connect::open(Some(&self.uri)).map_err(|e| BackendError::Connect {
            uri: self.uri.clone(),
            message: e.message().to_string(),
        })?;
        if let Ok(mut ev) = self.events.lock() {
            if let Some((tx, reg)) = ev.as_mut() {
                // The old registration goes first (its connection is dead).
                *reg = None;
                *reg = Some(register(&conn, tx.clone()).map_err(|m| self.events_error(m))?);
            }
        }
        let mut cur = self.current.lock().map_err(|_| self.lost())?;
        cur.0 += 1;
        cur.1 = Some(conn);
        Ok(())
    }

    /// Send the domains' events to `tx`, on this connection and each one
    /// after a reconnect.
    pub(super) fn watch_events(&self, tx: Sender<HvEvent>) -> Result<(), BackendError> {
        let reg = match self.conn() {
            Ok(c) => Some(register(&c, tx.clone()).map_err(|m| self.events_error(m))?),
            Err(_) => None, // registered when it connects
        };
        if let Ok(mut ev) = self.events.lock() {
            *ev = Some((tx, reg));
        }
        Ok(())
    }

    /// The connection, as it is now.
    pub(super) fn conn(&self) -> Result<Connect, BackendError> {
        match self.current.lock() {
            Ok(c) => c.1.clone().ok_or_else(|| self.lost()),
            Err(_) => Err(self.lost()),
        }
    }

    /// The connection's generation (handles of an older one are stale).
    pub(super) fn generation(&self) -> u64 {
        self.current.lock().map(|c| c.0).unwrap_or(0)
    }
}
