//! Kernel log records (`/dev/kmsg`): parsing, the classification both
//! sides share (the agent's of its guest's log, vigild's of its host's),
//! and a reader.
//!
//! A record is `PRIO,SEQ,TS_USEC,FLAGS[,...];TEXT\n`, optionally followed by
//! continuation lines that start with a space (` SUBSYSTEM=...`). Reading
//! `/dev/kmsg` returns one record per `read`; `EPIPE` means records were
//! overwritten before we read them (counted, then reading goes on). Parsing
//! and classification are pure; [`KmsgReader`] does the I/O.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::limits::{truncate_utf8, MAX_TEXT};
use crate::snapshot::{KernelEvent, KernelEventKind};
use crate::Text;

/// One parsed kmsg record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Syslog priority (facility stripped).
    pub priority: u8,
    /// Sequence number.
    pub seq: u64,
    /// Microseconds since boot.
    pub timestamp_us: u64,
    /// Message text.
    pub text: &'a str,
}

/// Parse one record line (continuation lines are not records: `None`).
pub fn parse_record(line: &str) -> Option<Record<'_>> {
    if line.starts_with(' ') {
        return None;
    }
    let (prefix, text) = line.split_once(';')?;
    let mut fields = prefix.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let timestamp_us = fields.next()?.parse().ok()?;
    Some(Record {
        priority: (prio & 7) as u8,
        seq,
        timestamp_us,
        text: text.trim_end_matches('\n'),
    })
}

fn word_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let w: &str = rest.split([',', ' ', ')', ':']).next()?;
    (!w.is_empty()).then_some(w)
}

/// What a record means for health, and what it names: pure.
pub fn classify(text: &str) -> Option<(KernelEventKind, Option<&str>)> {
    use KernelEventKind as K;
    let has = |s: &str| text.contains(s);
    if has("Kernel panic - not syncing") {
        return Some((K::Panic, None));
    }
    if has("soft lockup") || has("hard LOCKUP") {
        return Some((K::SoftLockup, None));
    }
    if has("rcu_sched detected stall")
        || has("rcu_preempt detected stall")
        || has("detected stalls on CPU")
    {
        return Some((K::RcuStall, None));
    }
    if has("blocked for more than") && has("task ") {
        return Some((K::HungTask, word_after(text, "task ")));
    }
    if has("Out of memory: Killed process") || has("out of memory: Killed process") {
        let victim = text.find("Killed process ").and_then(|i| {
            let rest = &text[i..];
            let open = rest.find('(')?;
            let close = rest[open..].find(')')?;
            Some(&rest[open + 1..open + close])
        });
        return Some((K::OomKill, victim));
    }
    if has("Remounting filesystem read-only") || has("forced readonly") {
        return Some((
            K::RemountReadOnly,
            word_after(text, "(device ").or(word_after(text, "(")),
        ));
    }
    if has("EXT4-fs error") || has("EXT3-fs error") || has("BTRFS error") || has("BTRFS critical") {
        return Some((K::FsError, word_after(text, "(device ")));
    }
    if text.starts_with("XFS (")
        && (has("error") || has("Corruption") || has("shut down") || has("shutdown"))
    {
        return Some((K::FsError, word_after(text, "XFS (")));
    }
    if has("I/O error, dev ") {
        return Some((K::IoError, word_after(text, "I/O error, dev ")));
    }
    if has("Buffer I/O error on dev") {
        return Some((K::IoError, word_after(text, "Buffer I/O error on dev ")));
    }
    if has("[Hardware Error]") || has("Machine check") || has("Machine Check") {
        return Some((K::MachineCheck, None));
    }
    if has("Oops") || has("BUG: ") || has("kernel BUG at") || has("general protection fault") {
        return Some((K::Oops, None));
    }
    if has("segfault at ") {
        let subject = text
            .split(['[', ':'])
            .next()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        return Some((K::Segfault, subject));
    }
    None
}

/// Classify a record into an event with bounded text.
pub fn event_of(r: &Record<'_>) -> Option<KernelEvent> {
    let (kind, subject) = classify(r.text)?;
    Some(KernelEvent {
        kind,
        seq: r.seq,
        timestamp_us: r.timestamp_us,
        subject: subject.map(|s| Text::from(truncate_utf8(s, 64))),
        text: Text::from(truncate_utf8(r.text, MAX_TEXT)),
    })
}

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome<T = KernelEvent> {
    /// Records were read (possibly none classified).
    Records(Vec<T>),
    /// Records were overwritten before they could be read.
    Overwritten,
    /// No more records right now (non-blocking device or end of a file).
    Idle,
}

/// Reads kmsg records from the device (one per read) or from a plain file
/// of records (many per read, for tests and replays).
pub struct KmsgReader {
    file: File,
    buf: Vec<u8>,
    partial: Vec<u8>,
}

/// Largest kmsg record the kernel hands out (its buffer is 1 KiB + prefix).
const RECORD_BUF: usize = 8192;

impl KmsgReader {
    /// Open `path`; `nonblocking` for a one-shot scan of what is there now.
    pub fn open(path: &Path, nonblocking: bool) -> io::Result<KmsgReader> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        if nonblocking {
            o.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
        }
        Ok(KmsgReader {
            file: o.open(path)?,
            buf: vec![0; RECORD_BUF],
            partial: Vec::new(),
        })
    }

    /// The descriptor read (to wait on it).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }

    /// Read once and classify what arrived (the guest's classes).
    pub fn read_once(&mut self) -> io::Result<ReadOutcome> {
        self.read_with(event_of)
    }

    /// Read once and make what arrived into `T`s with `f` (records it
    /// gives `None` for are dropped).
    pub fn read_with<T>(
        &mut self,
        mut f: impl FnMut(&Record<'_>) -> Option<T>,
    ) -> io::Result<ReadOutcome<T>> {
        let n = match self.file.read(&mut self.buf) {
            Ok(0) => return Ok(ReadOutcome::Idle),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ReadOutcome::Overwritten),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Idle),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return Ok(ReadOutcome::Records(vec![]))
            }
            Err(e) => return Err(e),
        };
        self.partial.extend_from_slice(&self.buf[..n]);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&self.partial[start..start + end]);
            if let Some(t) = parse_record(&line).as_ref().and_then(&mut f) {
                out.push(t);
            }
            start += end + 1;
        }
        self.partial.drain(..start);
        // A line longer than any record is garbage; do not let it grow.
        if self.partial.len() > RECORD_BUF {
            self.partial.clear();
        }
        Ok(ReadOutcome::Records(out))
    }

    /// Skip what the log holds now: only records from here on are read
    /// (`/dev/kmsg`: to its end; a plain file: to its end too).
    pub fn skip_to_end(&mut self) -> io::Result<()> {
        use std::io::Seek;
        self.file.seek(io::SeekFrom::End(0)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use KernelEventKind as K;

    /// Real-format records, one or more per kind.
    type Expected = Option<(K, Option<&'static str>)>;

    const SAMPLES: &[(&str, Expected)] = &[
        ("0,812,4417123,-;Kernel panic - not syncing: sysrq triggered crash", Some((K::Panic, None))),
        ("1,700,3312000,-;BUG: kernel NULL pointer dereference, address: 0000000000000000", Some((K::Oops, None))),
        ("4,701,3312010,-;Oops: 0002 [#1] PREEMPT SMP NOPTI", Some((K::Oops, None))),
        ("2,702,3312020,-;kernel BUG at mm/slub.c:4432!", Some((K::Oops, None))),
        ("3,900,122880001,-;INFO: task jbd2/vda1-8:123 blocked for more than 120 seconds.", Some((K::HungTask, Some("jbd2/vda1-8")))),
        ("0,901,52000000,-;watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [spin:431]", Some((K::SoftLockup, None))),
        ("0,902,52000001,-;NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", Some((K::SoftLockup, None))),
        ("3,903,61000000,-;rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", Some((K::RcuStall, None))),
        ("3,904,70000000,-;Out of memory: Killed process 4242 (hog) total-vm:2097152kB, anon-rss:1048576kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:2100kB oom_score_adj:0", Some((K::OomKill, Some("hog")))),
        ("3,905,70000001,-;Memory cgroup out of memory: Killed process 77 (java) total-vm:1kB", Some((K::OomKill, Some("java")))),
        ("3,906,80000000,-;I/O error, dev vdb, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2", Some((K::IoError, Some("vdb")))),
        ("3,907,80000001,-;blk_update_request: I/O error, dev sda, sector 12345 op 0x0:(READ)", Some((K::IoError, Some("sda")))),
        ("3,908,80000002,-;Buffer I/O error on dev vdb1, logical block 0, lost async page write", Some((K::IoError, Some("vdb1")))),
        ("2,909,90000000,-;EXT4-fs error (device vda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0", Some((K::FsError, Some("vda1")))),
        ("2,910,90000001,-;EXT4-fs (vda1): Remounting filesystem read-only", Some((K::RemountReadOnly, Some("vda1")))),
        ("2,911,90000002,-;XFS (vdb1): metadata I/O error in \"xfs_imap_to_bp+0x5c/0xa0\" at daddr 0x40 len 32 error 5", Some((K::FsError, Some("vdb1")))),
        ("2,912,90000003,-;XFS (vdb1): Corruption of in-memory data detected.  Shutting down filesystem", Some((K::FsError, Some("vdb1")))),
        ("2,913,90000004,-;BTRFS error (device vdc): bdev /dev/vdc errs: wr 1, rd 0, flush 0, corrupt 0, gen 0", Some((K::FsError, Some("vdc")))),
        ("2,914,90000005,-;BTRFS: error (device vdc) in btrfs_commit_transaction:2466: errno=-5 IO failure (Error while writing out transaction); forced readonly", Some((K::RemountReadOnly, Some("vdc")))),
        ("2,915,95000000,-;mce: [Hardware Error]: Machine check events logged", Some((K::MachineCheck, None))),
        ("6,916,99000000,-;crashy[1234]: segfault at 0 ip 000055d0c1a2b3c4 sp 00007ffd1e2f3a40 error 6 in crashy[55d0c1a2b000+1000]", Some((K::Segfault, Some("crashy")))),
        ("6,917,99000001,-;virtio_net virtio1 enp1s0: renamed from eth0", None),
        ("6,918,99000002,-;EXT4-fs (vda1): mounted filesystem with ordered data mode.", None),
    ];

    #[test]
    fn every_sample_is_classified() {
        for (line, want) in SAMPLES {
            let r = parse_record(line).unwrap_or_else(|| panic!("unparsed: {line}"));
            assert_eq!(classify(r.text), *want, "{line}");
        }
    }

    #[test]
    fn record_fields_are_parsed() {
        let r = parse_record("30,812,4417123,-,caller=T1;hello;world\n").unwrap();
        assert_eq!(
            r,
            Record {
                priority: 6,
                seq: 812,
                timestamp_us: 4417123,
                text: "hello;world"
            }
        );
        assert_eq!(parse_record(" SUBSYSTEM=block"), None);
        assert_eq!(parse_record("garbage"), None);
        assert_eq!(parse_record("x,1,2,-;t"), None);
    }

    #[test]
    fn event_text_is_truncated() {
        let long = format!("3,1,2,-;I/O error, dev vdb, {}", "x".repeat(4000));
        let ev = event_of(&parse_record(&long).unwrap()).unwrap();
        assert_eq!(ev.text.len(), MAX_TEXT);
        assert_eq!(ev.subject.as_deref(), Some("vdb"));
    }

    #[test]
    fn reader_handles_a_file_of_records_with_continuations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        let mut text = String::new();
        for (line, _) in SAMPLES {
            text.push_str(line);
            text.push('\n');
            text.push_str(" SUBSYSTEM=block\n DEVICE=b253:16\n");
        }
        std::fs::write(&path, text).unwrap();
        let mut r = KmsgReader::open(&path, true).unwrap();
        let mut events = Vec::new();
        while let ReadOutcome::Records(evs) = r.read_once().unwrap() {
            events.extend(evs);
        }
        assert_eq!(
            events.len(),
            SAMPLES.iter().filter(|(_, w)| w.is_some()).count()
        );
        assert_eq!(events[0].kind, K::Panic);
        assert_eq!(events[0].seq, 812);
    }
}
