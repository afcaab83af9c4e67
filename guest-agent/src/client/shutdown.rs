//! Whether the system is going down, and how: what the agent says in its
//! `Bye`, and why a watched service that stops during a shutdown is no
//! news for the host.

use std::time::Duration;

use vigil_protocol::ByeReason;

/// Why the agent is stopping: the system going down (and for a reboot or
/// a power-off) or only the agent. Under systemd, its queued jobs tell: a
/// `reboot.target` (or kexec, soft-reboot) or `poweroff.target` (or halt)
/// start job is what `systemctl reboot` / `poweroff` queue; without one,
/// the agent alone is being stopped. Asked with a 2 s bound.
pub(super) fn stop_reason() -> ByeReason {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return ByeReason::Stopped;
    }
    let jobs = crate::commands::output(
        &[
            "systemctl",
            "list-jobs",
            "--no-legend",
            "--no-pager",
            "--full",
        ],
        Duration::from_secs(2),
    )
    .unwrap_or_default();
    bye_reason(&jobs)
}

/// Whether the system is going down, and how: a reboot or power-off job
/// queued (see [`stop_reason`]).
pub(super) fn going_down() -> Option<ByeReason> {
    match stop_reason() {
        r @ (ByeReason::Reboot | ByeReason::Shutdown) => Some(r),
        _ => None,
    }
}

/// The reason `systemctl list-jobs` output implies (pure).
fn bye_reason(jobs: &str) -> ByeReason {
    let queued = |t: &str| jobs.lines().any(|l| l.split_whitespace().nth(1) == Some(t));
    if ["reboot.target", "kexec.target", "soft-reboot.target"]
        .iter()
        .any(|t| queued(t))
    {
        ByeReason::Reboot
    } else if ["poweroff.target", "halt.target", "shutdown.target"]
        .iter()
        .any(|t| queued(t))
    {
        ByeReason::Shutdown
    } else {
        ByeReason::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queued_jobs_tell_a_reboot_from_a_poweroff_from_a_stop() {
        // As `systemctl list-jobs --no-legend` prints them mid-shutdown.
        let reboot = "\
1234 reboot.target            start waiting
1240 vigil-agent.service      stop  running
1236 shutdown.target          start waiting
";
        assert_eq!(bye_reason(reboot), ByeReason::Reboot);
        let poweroff = "\
98 poweroff.target start waiting
99 shutdown.target start waiting
";
        assert_eq!(bye_reason(poweroff), ByeReason::Shutdown);
        let stop = "1240 vigil-agent.service stop running\n";
        assert_eq!(bye_reason(stop), ByeReason::Stopped);
        assert_eq!(bye_reason(""), ByeReason::Stopped);
        // A unit merely named like a target is not one.
        assert_eq!(
            bye_reason("7 my-reboot.target.service start running\n"),
            ByeReason::Stopped
        );
    }
}
