//! Guest-declared maintenance: `vigil-agent maintenance on|off|status`
//! talks to the running agent over a Unix socket in its runtime directory
//! (`control.sock`, mode 0600: root only); the agent keeps the window (in
//! a file beside it, so an agent restarted mid-window, as a package upgrade
//! does, keeps it) and tells the host with `Notice::MaintenanceStart` /
//! `MaintenanceEnd`, now and at every new session while it lasts.
//!
//! A window opened by a hook (`--hook apt`, the APT hook the package
//! ships) is closed only by the same hook or a plain `off`: an upgrade
//! ending does not end an operator's window.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The socket's name in the runtime (state) directory.
pub const SOCKET: &str = "control.sock";
/// The window's file in the runtime directory.
const FILE: &str = "maintenance.json";
/// The longest window a guest may declare (the host bounds it too).
pub const MAX_WINDOW_S: u32 = 24 * 3600;
/// A request is one line of at most this many bytes.
const MAX_REQUEST: u64 = 4096;
/// A client that says nothing for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest reason kept.
const MAX_REASON: usize = 200;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Open (or replace) a window.
    On {
        /// Length in seconds.
        for_s: u32,
        /// Why.
        reason: String,
        /// The hook that opens it, if one does.
        hook: Option<String>,
    },
    /// Close the window (with `hook`, only one that hook opened).
    Off {
        /// The hook that closes it, if one does.
        hook: Option<String>,
    },
    /// Say how things stand.
    Status,
}

/// An open window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// When it ends, ms since the epoch.
    pub until_ms: u64,
    /// Why.
    pub reason: String,
    /// The hook that opened it.
    pub hook: Option<String>,
}

impl Window {
    /// Seconds left at `now_ms` (0: over).
    pub fn left_s(&self, now_ms: u64) -> u32 {
        (self.until_ms.saturating_sub(now_ms) / 1000).min(u64::from(MAX_WINDOW_S)) as u32
    }
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, for a person.
    pub message: String,
    /// The window now open, if any.
    pub window: Option<Window>,
    /// Whether the agent has a session with the host now (the notice is
    /// sent now, else at the next session).
    pub connected: bool,
}

/// What changed, for the main loop to tell the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A window opened: seconds, reason.
    Start(u32, String),
    /// The window closed.
    End,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The window, kept in the runtime directory.
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    window: Option<Window>,
}

impl State {
    /// The window left by an earlier agent of this boot, if it is still open.
    pub fn load(dir: &Path) -> State {
        let window = std::fs::read(dir.join(FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Window>(&b).ok())
            .filter(|w| w.left_s(now_ms()) > 0);
        State {
            dir: dir.to_path_buf(),
            window,
        }
    }

    /// The open window at `now_ms` (an expired one is forgotten).
    pub fn current(&mut self, now_ms: u64) -> Option<&Window> {
        if self.window.as_ref().is_some_and(|w| w.left_s(now_ms) == 0) {
            self.set(None);
        }
        self.window.as_ref()
    }

    fn set(&mut self, w: Option<Window>) {
        let path = self.dir.join(FILE);
        let r = match &w {
            Some(w) => serde_json::to_vec(w)
                .map_err(std::io::Error::other)
                .and_then(|b| write_atomically(&path, &b)),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = r {
            log::warn!(
                "cannot keep the maintenance window in {}: {e}",
                path.display()
            );
        }
        self.window = w;
    }

    /// Carry out a request at `now_ms`: the reply (its `connected` left
    /// false for the caller to fill in) and what to tell the host.
    pub fn apply(&mut self, req: Request, now_ms: u64) -> (Reply, Option<Change>) {
        let (ok, message, change) = match req {
            Request::On {
                for_s,
                reason,
                hook,
            } => {
                if for_s == 0 || for_s > MAX_WINDOW_S {
                    (
                        false,
                        format!("a window lasts 1 s to {} h", MAX_WINDOW_S / 3600),
                        None,
                    )
                } else {
                    let reason: String = reason.chars().take(MAX_REASON).collect();
                    self.set(Some(Window {
                        until_ms: now_ms + u64::from(for_s) * 1000,
                        reason: reason.clone(),
                        hook,
                    }));
                    (
                        true,
                        format!("maintenance on for {for_s} s"),
                        Some(Change::Start(for_s, reason)),
                    )
                }
            }
            Request::Off { hook } => match self.current(now_ms).cloned() {
                None => (true, "maintenance was not on".into(), None),
                Some(w) if hook.is_some() && w.hook != hook => (
                    true,
                    "maintenance left on: the hook did not open it".into(),
                    None,
                ),
                Some(_) => {
                    self.set(None);
                    (true, "maintenance off".into(), Some(Change::End))
                }
            },
            Request::Status => (true, String::new(), None),
        };
        let reply = Reply {
            ok,
            message,
            window: self.current(now_ms).cloned(),
            connected: false,
        };
        (reply, change)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Bind the control socket in `dir` (a stale one from an earlier agent is
/// replaced), root only.
pub fn bind(dir: &Path) -> std::io::Result<UnixListener> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serve clients one at a time, for the agent's lifetime: each sends one
/// JSON line and gets one back. `handle` carries a request out.
pub fn serve(listener: UnixListener, mut handle: impl FnMut(Request) -> Reply) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if let Err(e) = one(conn, &mut handle) {
            log::debug!("maintenance client: {e}");
        }
    }
}

fn one(conn: UnixStream, handle: &mut impl FnMut(Request) -> Reply) -> std::io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(req),
        Err(e) => Reply {
            ok: false,
            message: format!("bad request: {e}"),
            window: None,
            connected: false,
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&conn).write_all(&out)
}

/// Ask the agent whose runtime directory is `dir`.
pub fn ask(dir: &Path, req: &Request) -> std::io::Result<Reply> {
    let conn = UnixStream::connect(dir.join(SOCKET))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut out = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&conn).write_all(&out)?;
    let mut line = String::new();
    BufReader::new((&conn).take(64 * 1024)).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

/// Shared between the control thread and the main loop.
pub type Shared = Arc<Mutex<State>>;

/// The reply as a person reads it.
pub fn render(r: &Reply, now_ms: u64) -> String {
    let mut s = String::new();
    if !r.message.is_empty() {
        s.push_str(&r.message);
        s.push('\n');
    }
    match &r.window {
        Some(w) => s.push_str(&format!(
            "maintenance: on, {} s left{}{}\n",
            w.left_s(now_ms),
            if w.reason.is_empty() {
                String::new()
            } else {
                format!(", reason: {}", w.reason)
            },
            w.hook
                .as_ref()
                .map_or(String::new(), |h| format!(" (opened by the {h} hook)")),
        )),
        None => s.push_str("maintenance: off\n"),
    }
    s.push_str(if r.connected {
        "host: connected (told now)\n"
    } else {
        "host: not connected (told when the session starts)\n"
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(for_s: u32, hook: Option<&str>) -> Request {
        Request::On {
            for_s,
            reason: "upgrade".into(),
            hook: hook.map(String::from),
        }
    }

    #[test]
    fn a_window_opens_persists_expires_and_a_hook_closes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path());
        let t = now_ms();
        let (r, c) = s.apply(on(60, None), t);
        assert!(r.ok);
        assert_eq!(c, Some(Change::Start(60, "upgrade".into())));
        // An agent started again in the same boot keeps it.
        let mut again = State::load(dir.path());
        assert_eq!(again.current(t).map(|w| w.until_ms), Some(t + 60_000));
        // The APT hook's "off" leaves an operator's window open.
        let (r, c) = s.apply(
            Request::Off {
                hook: Some("apt".into()),
            },
            t + 1,
        );
        assert!(r.ok && r.window.is_some() && c.is_none(), "{r:?}");
        let (r, c) = s.apply(Request::Off { hook: None }, t + 2);
        assert_eq!((r.window, c), (None, Some(Change::End)));
        // Its own window it closes.
        s.apply(on(60, Some("apt")), t);
        let (_, c) = s.apply(
            Request::Off {
                hook: Some("apt".into()),
            },
            t + 1,
        );
        assert_eq!(c, Some(Change::End));
        // Expiry forgets it, on disk too.
        s.apply(on(1, None), t);
        assert!(s.current(t + 1_000).is_none());
        assert!(State::load(dir.path()).window.is_none());
        // Out of bounds.
        let (r, c) = s.apply(on(0, None), t);
        assert!(!r.ok && c.is_none());
        let (r, _) = s.apply(on(MAX_WINDOW_S + 1, None), t);
        assert!(!r.ok);
    }

    #[test]
    fn the_socket_is_root_only_and_bad_requests_get_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let l = bind(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let state = Arc::new(Mutex::new(State::load(dir.path())));
        let st = state.clone();
        std::thread::spawn(move || serve(l, move |req| st.lock().unwrap().apply(req, now_ms()).0));
        let r = ask(dir.path(), &on(30, None)).unwrap();
        assert!(r.ok && r.window.is_some(), "{r:?}");
        assert!(render(&r, now_ms()).contains("maintenance: on"));
        // Garbage: a clear error, nothing changed.
        let mut c = UnixStream::connect(dir.path().join(SOCKET)).unwrap();
        c.write_all(b"{\"op\":\"explode\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        let bad: Reply = serde_json::from_str(&line).unwrap();
        assert!(!bad.ok && bad.message.contains("bad request"), "{bad:?}");
        assert!(ask(dir.path(), &Request::Status).unwrap().window.is_some());
    }
}
