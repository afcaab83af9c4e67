//! The host's side of the vNICs: each tap's state and bridge under
//! `/sys/class/net` (a root given, so tests run on a fake tree).

use std::path::Path;

use crate::engine::{HostNic, Tap};

/// `IFF_UP`.
const IFF_UP: u32 = 0x1;

/// The tap `dev` as `sys_root/class/net` shows it; none when there is no
/// such device (user-mode networking, or a domain not running).
pub fn tap(sys_root: &Path, dev: &str) -> Option<Tap> {
    if dev.is_empty() || dev.contains('/') || dev.starts_with('.') {
        return None;
    }
    let d = sys_root.join("class/net").join(dev);
    let flags = std::fs::read_to_string(d.join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    let master = std::fs::read_link(d.join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    Some(Tap {
        up: flags & IFF_UP != 0,
        master,
    })
}

/// Fill in each vNIC's tap from the host's sysfs.
pub fn fill_taps(sys_root: &Path, nics: &mut [HostNic]) {
    for n in nics {
        n.tap = n.target.as_deref().and_then(|t| tap(sys_root, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_up_down_and_on_their_bridge() {
        let t = tempfile::tempdir().unwrap();
        let net = t.path().join("class/net");
        for (dev, flags) in [("vnet0", "0x1003"), ("vnet1", "0x1002"), ("br0", "0x1003")] {
            std::fs::create_dir_all(net.join(dev)).unwrap();
            std::fs::write(net.join(dev).join("flags"), format!("{flags}\n")).unwrap();
        }
        std::os::unix::fs::symlink("../br0", net.join("vnet0/master")).unwrap();
        let mut nics: Vec<HostNic> = ["vnet0", "vnet1", "vnet9"]
            .iter()
            .map(|d| HostNic {
                mac: "52:54:00:00:00:01".into(),
                target: Some(d.to_string()),
                link_up: true,
                bridge: Some("br0".into()),
                tap: None,
            })
            .collect();
        fill_taps(t.path(), &mut nics);
        assert_eq!(
            nics[0].tap,
            Some(Tap {
                up: true,
                master: Some("br0".into())
            })
        );
        assert_eq!(nics[0].problem(), None);
        assert_eq!(
            nics[1].tap,
            Some(Tap {
                up: false,
                master: None
            })
        );
        assert!(nics[1].problem().is_some());
        assert_eq!(nics[2].tap, None);
        assert_eq!(tap(t.path(), "../etc"), None);
    }
}
