//! Host commands: looked up in the agent's own allow-list, run with a
//! timeout, answered with a bounded outcome. Nothing from the wire reaches
//! the program's arguments.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use vigil_protocol::limits::{truncate_utf8, MAX_TEXT};
use vigil_protocol::{CommandAction, CommandOutcome, Text};

use crate::config::{Allowed, AllowedAction, Config};

/// The allow-list entry a command maps to, or `None` (denied).
pub fn lookup<'a>(config: &'a Config, action: &CommandAction) -> Option<&'a Allowed> {
    match action {
        CommandAction::RestartService(n) => config.allowed(AllowedAction::RestartService, n),
        CommandAction::Repair(n) => config.allowed(AllowedAction::Repair, n),
        CommandAction::Reboot => config.allowed(AllowedAction::Reboot, "reboot"),
    }
}

/// A name for logs: the action and the requested name, bounded.
pub fn describe(action: &CommandAction) -> String {
    match action {
        CommandAction::RestartService(n) => format!("restart-service {:?}", truncate_utf8(n, 64)),
        CommandAction::Repair(n) => format!("repair {:?}", truncate_utf8(n, 64)),
        CommandAction::Reboot => "reboot".into(),
    }
}

/// Run an allow-listed entry to completion or its timeout.
pub fn run(entry: &Allowed) -> CommandOutcome {
    let Some((prog, args)) = entry.argv.split_first() else {
        return CommandOutcome::Failed {
            exit_code: None,
            detail: "empty argv".into(),
        };
    };
    // Output goes to an anonymous temporary file, not a pipe: a command
    // that starts a daemon (which inherits the descriptors) must not keep
    // the agent waiting for an end-of-file that never comes.
    let out = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            return CommandOutcome::Failed {
                exit_code: None,
                detail: Text::from(format!("no temporary file: {e}")),
            }
        }
    };
    let (stdout, stderr) = match (out.try_clone(), out.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return CommandOutcome::Failed {
                exit_code: None,
                detail: "cannot duplicate a descriptor".into(),
            }
        }
    };
    let mut cmd = Process::new(prog);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls sigprocmask (async-signal-safe) to give the program an empty
    // signal mask instead of the agent's (which blocks SIGTERM/SIGINT/SIGHUP
    // for its signal thread); a restarted service must be stoppable.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        });
    }
    let mut child = match cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return CommandOutcome::Failed {
                exit_code: None,
                detail: Text::from(format!("cannot run {prog}: {e}")),
            }
        }
    };
    let status = wait_for(&mut child, Duration::from_secs(entry.timeout_s));
    let mut tail = Vec::new();
    let mut out = out;
    if let Ok(len) = out.seek(SeekFrom::End(0)) {
        let _ = out.seek(SeekFrom::Start(len.saturating_sub(2 * MAX_TEXT as u64)));
        let _ = out.take(4 * MAX_TEXT as u64).read_to_end(&mut tail);
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim();
    let mut start = text.len().saturating_sub(MAX_TEXT);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let detail = Text::from(text[start..].trim_start());
    match status {
        Some(st) if st.success() => CommandOutcome::Succeeded,
        Some(st) => CommandOutcome::Failed {
            exit_code: st.code(),
            detail,
        },
        None => CommandOutcome::Failed {
            exit_code: None,
            detail: Text::from(format!("timed out after {} s", entry.timeout_s)),
        },
    }
}

/// Wait for `child` at most `timeout`; past it, kill it (None).
fn wait_for(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The standard output of a local query (not an allow-listed action):
/// `argv` run with no input, killed at `timeout`; None when it cannot run,
/// fails or times out. At most 64 KiB is kept.
pub fn output(argv: &[&str], timeout: Duration) -> Option<String> {
    let (prog, args) = argv.split_first()?;
    let out = tempfile::tempfile().ok()?;
    let mut child = Process::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().ok()?))
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if !wait_for(&mut child, timeout)?.success() {
        return None;
    }
    let mut out = out;
    out.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    out.take(64 * 1024).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(argv: &[&str], timeout_s: u64) -> Allowed {
        Allowed {
            action: AllowedAction::Repair,
            name: "x".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_s,
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(run(&entry(&["/bin/true"], 5)), CommandOutcome::Succeeded);
        assert_eq!(
            run(&entry(&["/bin/sh", "-c", "echo broken >&2; exit 3"], 5)),
            CommandOutcome::Failed {
                exit_code: Some(3),
                detail: "broken".into()
            }
        );
        assert!(matches!(
            run(&entry(&["/bin/sleep", "10"], 1)),
            CommandOutcome::Failed { exit_code: None, detail } if detail.contains("timed out")
        ));
        assert!(matches!(
            run(&entry(&["/nonexistent"], 1)),
            CommandOutcome::Failed {
                exit_code: None,
                ..
            }
        ));
    }

    #[test]
    fn commands_run_with_an_empty_signal_mask() {
        let mut blocked = nix::sys::signal::SigSet::empty();
        blocked.add(nix::sys::signal::Signal::SIGTERM);
        blocked.thread_block().unwrap();
        let r = run(&entry(
            &[
                "/bin/sh",
                "-c",
                "grep -q '^SigBlk:[[:space:]]*0*$' /proc/self/status",
            ],
            5,
        ));
        blocked.thread_unblock().unwrap();
        assert_eq!(r, CommandOutcome::Succeeded);
    }

    #[test]
    fn a_command_that_starts_a_daemon_returns_promptly() {
        let t = Instant::now();
        let r = run(&entry(&["/bin/sh", "-c", "sleep 30 & echo started"], 10));
        assert_eq!(r, CommandOutcome::Succeeded);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn lookup_only_finds_listed_names() {
        let config = Config {
            allow: vec![entry(&["/bin/true"], 5)],
            ..Config::default()
        };
        assert!(lookup(&config, &CommandAction::Repair("x".into())).is_some());
        assert!(lookup(&config, &CommandAction::RestartService("x".into())).is_none());
        assert!(lookup(&config, &CommandAction::Repair("../x".into())).is_none());
        assert!(lookup(&config, &CommandAction::Reboot).is_none());
    }
}
