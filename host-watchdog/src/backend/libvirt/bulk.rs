//! libvirt's bulk domain stats (`virConnectGetAllDomainStats`): one call
//! for every domain's state, vCPU time, block, network and balloon figures.
//! Made on the I/O thread only: on libvirt 9.0 it blocked 13.8 s on a
//! SIGSTOPped QEMU even for state and vCPU time with NOWAIT, so the backend
//! thread waits for it a bounded time and polls domain by domain without it
//! (see `daemon::io_counters`).

use super::Libvirt;
use crate::backend::DomainPoll;
use crate::engine::DomainStats;

/// One domain's figures from a bulk stats record (what was present).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bulk {
    /// `state.state`, `state.reason`.
    pub state: Option<(i32, i32)>,
    /// `cpu.time`, ns.
    pub cpu_time_ns: Option<u64>,
    /// `balloon.current`, `balloon.maximum`, KiB.
    pub balloon: (Option<u64>, Option<u64>),
    /// Block requests (read + write) over every disk.
    pub block_ops: u64,
    /// Network packets (rx + tx) over every interface.
    pub net_packets: u64,
    /// Any block or network figure was there (some drivers leave them out).
    pub io_seen: bool,
}

impl Bulk {
    /// Take one typed parameter of a stats record: pure.
    pub fn field(&mut self, name: &str, v: u64) {
        let block = |n: &str| n.ends_with(".rd.reqs") || n.ends_with(".wr.reqs");
        let net = |n: &str| n.ends_with(".rx.pkts") || n.ends_with(".tx.pkts");
        match name {
            "state.state" => self.state = Some((v as i32, self.state.map_or(0, |s| s.1))),
            "state.reason" => self.state = Some((self.state.map_or(-1, |s| s.0), v as i32)),
            "cpu.time" => self.cpu_time_ns = Some(v),
            "balloon.current" => self.balloon.0 = Some(v),
            "balloon.maximum" => self.balloon.1 = Some(v),
            n if n.starts_with("block.") && block(n) => {
                self.block_ops += v;
                self.io_seen = true;
            }
            n if n.starts_with("net.") && net(n) => {
                self.net_packets += v;
                self.io_seen = true;
            }
            _ => {}
        }
    }

    /// Current and maximum memory (KiB), when the record has them.
    pub fn memory(&self) -> Option<(u64, u64)> {
        Some((self.balloon.0?, self.balloon.1?))
    }

    /// The record as a domain poll: its state with reason, vCPU time when
    /// given (a driver may leave it out) and memory ((0, 0) when left out);
    /// `None` without a state.
    pub fn poll(&self) -> Option<DomainPoll> {
        let (state, reason) = self.state?;
        Some(DomainPoll {
            state: super::map_raw(state, reason),
            stats: self.cpu_time_ns.map(|cpu_time_ns| DomainStats {
                cpu_time_ns,
                ..DomainStats::default()
            }),
            memory_kib: self.memory().unwrap_or((0, 0)),
        })
    }
}

/// What the I/O thread gathers per domain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoFigures {
    /// Block requests (read + write).
    pub block_ops: u64,
    /// Network packets (rx + tx).
    pub net_packets: u64,
    /// Current and maximum memory (KiB), if given.
    pub memory: Option<(u64, u64)>,
}

impl Libvirt {
    /// Every domain's stats of the kinds in `stats` in one call (one RPC
    /// through libvirtd, whatever the number of domains), never waiting for
    /// a domain whose job lock is held (NOWAIT: that domain's figures that
    /// need its monitor are left out).
    pub fn bulk(&self, stats: u32) -> Result<Vec<(String, Bulk)>, String> {
        use std::ffi::CStr;
        use virt::sys;
        let conn = self.conn().map_err(|e| e.to_string())?;
        let mut recs: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
        // SAFETY: an open connection (held until the call returns); libvirt allocates the record list,
        // freed below with its own function.
        let n = unsafe {
            sys::virConnectGetAllDomainStats(
                conn.as_ptr(),
                stats,
                &mut recs,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
            )
        };
        if n < 0 || recs.is_null() {
            return Err(virt::error::Error::last_error().message().to_string());
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: `n` records, each valid until the list is freed.
            let rec = unsafe { &**recs.add(i) };
            // SAFETY: the record's domain lives as long as the list.
            let name = unsafe { CStr::from_ptr(sys::virDomainGetName(rec.dom)) }
                .to_string_lossy()
                .into_owned();
            let mut b = Bulk::default();
            for j in 0..rec.nparams.max(0) as usize {
                // SAFETY: `nparams` parameters, valid with the record.
                let p = unsafe { &*rec.params.add(j) };
                // SAFETY: libvirt NUL-terminates a field within its 80 bytes.
                let field = unsafe { CStr::from_ptr(p.field.as_ptr()) }.to_string_lossy();
                let Some(v) = number(p) else { continue };
                b.field(&field, v);
            }
            out.push((name, b));
        }
        // SAFETY: the list from virConnectGetAllDomainStats, freed once.
        unsafe { sys::virDomainStatsRecordListFree(recs) };
        Ok(out)
    }
}

/// A typed parameter's value, if it is a number (negative ones as 0).
fn number(p: &virt::sys::virTypedParameter) -> Option<u64> {
    use virt::sys;
    // SAFETY: only the union member that `type_` names is read.
    unsafe {
        match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => Some(p.value.i.max(0) as u64),
            sys::VIR_TYPED_PARAM_UINT => Some(u64::from(p.value.ui)),
            sys::VIR_TYPED_PARAM_LLONG => Some(p.value.l.max(0) as u64),
            sys::VIR_TYPED_PARAM_ULLONG => Some(p.value.ul),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's figures: state, balloon, block and network summed over
    /// devices (other fields ignored); a record without them says so.
    #[test]
    fn a_bulk_stats_record_is_read() {
        let mut b = Bulk::default();
        for (k, v) in [
            ("state.state", 1),
            ("state.reason", 1),
            ("balloon.current", 393_216),
            ("balloon.maximum", 524_288),
            ("block.count", 2),
            ("block.0.rd.reqs", 10),
            ("block.0.wr.reqs", 5),
            ("block.1.rd.reqs", 1),
            ("block.0.rd.bytes", 4096),
            ("net.count", 1),
            ("net.0.rx.pkts", 7),
            ("net.0.tx.pkts", 3),
            ("net.0.rx.bytes", 900),
        ] {
            b.field(k, v);
        }
        assert_eq!(b.state, Some((1, 1)));
        assert_eq!(b.poll().unwrap().stats, None, "no vCPU time given");
        b.field("cpu.time", 7_000_000);
        let p = b.poll().unwrap();
        assert_eq!(
            (p.state, p.stats.map(|s| s.cpu_time_ns), p.memory_kib),
            (
                crate::engine::DomainState::Running,
                Some(7_000_000),
                (393_216, 524_288)
            )
        );
        assert_eq!((b.block_ops, b.net_packets, b.io_seen), (16, 10, true));
        assert_eq!(b.memory(), Some((393_216, 524_288)));
        let mut bare = Bulk::default();
        bare.field("state.reason", 2);
        bare.field("state.state", 5);
        assert_eq!(bare.state, Some((5, 2)));
        assert_eq!((bare.io_seen, bare.memory()), (false, None));
        let p = bare.poll().unwrap();
        assert_eq!(
            p.state,
            crate::engine::DomainState::ShutOff(crate::engine::StopReason::Destroyed)
        );
        assert_eq!(bare.poll().map(|_| ()), Some(()));
        assert_eq!(Bulk::default().poll(), None, "no state, no poll");
    }
}
