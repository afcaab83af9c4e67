//! The host's pressure stall information (`/proc/pressure/{memory,io}`,
//! PSI): the share of time all non-idle tasks were stalled waiting for
//! memory or I/O (pure parsing; the daemon reads the files).

/// One resource's `full` stall shares, percent of wall time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Psi {
    /// Over the last 10 s.
    pub full_avg10: f64,
    /// Over the last 60 s.
    pub full_avg60: f64,
}

/// Parse a `/proc/pressure/*` file (pure): its `full` line; `None` when
/// there is none (`cpu` at the system level on older kernels).
pub fn parse(text: &str) -> Option<Psi> {
    let line = text.lines().find(|l| l.starts_with("full "))?;
    let mut psi = Psi::default();
    for field in line.split_whitespace().skip(1) {
        let (k, v) = field.split_once('=')?;
        match k {
            "avg10" => psi.full_avg10 = v.parse().ok()?,
            "avg60" => psi.full_avg60 = v.parse().ok()?,
            _ => {}
        }
    }
    Some(psi)
}

/// Read `proc_root/pressure/NAME` (None without PSI).
pub fn read(proc_root: &std::path::Path, name: &str) -> Option<Psi> {
    parse(&std::fs::read_to_string(proc_root.join("pressure").join(name)).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_line_is_read() {
        let io = "some avg10=0.16 avg60=0.45 avg300=0.61 total=21626723\n\
                  full avg10=12.11 avg60=20.35 avg300=0.43 total=16650062\n";
        assert_eq!(
            parse(io),
            Some(Psi {
                full_avg10: 12.11,
                full_avg60: 20.35
            })
        );
        assert_eq!(
            parse("some avg10=2.14 avg60=1.53 avg300=2.91 total=3\n"),
            None
        );
        assert_eq!(parse("full avg10=x avg60=1.0\n"), None);
        assert_eq!(parse(""), None);
    }
}
