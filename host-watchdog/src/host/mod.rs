//! The host's own health, as vigild sees it: its kernel log (machine
//! checks, memory errors, disk I/O errors, OOM kills, hung tasks), read on
//! a thread of its own, its pressure stall information, and which VM a
//! QEMU process runs, and where VM disks live (filesystems, devices).

pub mod kmsg;
pub mod net;
pub mod pressure;
pub mod qemu;
pub mod storage;
