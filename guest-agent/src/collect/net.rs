//! The guest's network: interfaces from `/sys/class/net`, default routes
//! from `/proc/net/route` and `/proc/net/ipv6_route`, the gateway's
//! neighbour entry from `/proc/net/arp`; addresses from the kernel
//! (`getifaddrs`, netlink) handed in, so that tests run on fake trees.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use vigil_protocol::limits::{truncate_utf8, MAX_ADDRESSES, MAX_INTERFACES, MAX_TEXT};
use vigil_protocol::snapshot::{
    Interface, Neighbour, NeighbourState, NetCounters, Network, Route, TcpCheck,
};
use vigil_protocol::Text;

use crate::config::NetworkConfig;

/// `IFF_UP`.
const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK`.
const IFF_LOOPBACK: u32 = 0x8;
/// `ARPHRD_LOOPBACK`.
const ARPHRD_LOOPBACK: u32 = 772;
/// `RTF_UP`, `RTF_REJECT` (route flags).
const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;
/// `ATF_COM`: the neighbour's hardware address is known.
const ATF_COM: u32 = 0x2;

fn text(s: &str) -> Text {
    Text::from(truncate_utf8(s, MAX_TEXT))
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// The kernel's addresses per interface (`10.0.2.15/24`), link-local IPv6
/// left out: what [`collect`] is given in a running guest.
pub fn kernel_addresses() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let (Some(addr), mask) = (a.address, a.netmask) else {
            continue;
        };
        let (ip, prefix): (IpAddr, u32) = if let Some(v4) = addr.as_sockaddr_in() {
            let bits = mask
                .and_then(|m| m.as_sockaddr_in().map(|m| m.ip().to_bits().count_ones()))
                .unwrap_or(32);
            (IpAddr::V4(v4.ip()), bits)
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let bits = mask
                .and_then(|m| m.as_sockaddr_in6().map(|m| m.ip().to_bits().count_ones()))
                .unwrap_or(128);
            (IpAddr::V6(v6.ip()), bits)
        } else {
            continue;
        };
        if let IpAddr::V6(v6) = ip {
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                continue; // link-local: every up interface has one
            }
        }
        out.entry(a.interface_name)
            .or_default()
            .push(format!("{ip}/{prefix}"));
    }
    out
}

/// The interfaces under `sys_root/class/net` the config reports, by name.
pub fn interfaces(
    sys_root: &Path,
    cfg: &NetworkConfig,
    addresses: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Interface>, String> {
    let dir = sys_root.join("class/net");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| cfg.reports(n))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let d = dir.join(&name);
        let num = |f: &str| read(&d.join(f)).and_then(|v| v.parse::<u64>().ok());
        let flags = read(&d.join("flags"))
            .and_then(|f| hex_u32(&f))
            .unwrap_or(0);
        let kind = num("type").unwrap_or(0);
        if flags & IFF_LOOPBACK != 0 || kind == u64::from(ARPHRD_LOOPBACK) {
            continue;
        }
        if out.len() >= MAX_INTERFACES {
            break;
        }
        let stat = |f: &str| num(&format!("statistics/{f}")).unwrap_or(0);
        let up = flags & IFF_UP != 0;
        out.push(Interface {
            name: text(&name),
            mac: text(&read(&d.join("address")).unwrap_or_default().to_lowercase()),
            up,
            // Reading `carrier` of an interface that is down fails (EINVAL).
            carrier: up && num("carrier") == Some(1),
            operstate: text(&read(&d.join("operstate")).unwrap_or_else(|| "unknown".into())),
            mtu: num("mtu").and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
            addresses: addresses
                .get(&name)
                .into_iter()
                .flatten()
                .take(MAX_ADDRESSES)
                .map(|a| text(a))
                .collect(),
            counters: NetCounters {
                rx_packets: stat("rx_packets"),
                tx_packets: stat("tx_packets"),
                rx_errors: stat("rx_errors"),
                tx_errors: stat("tx_errors"),
                rx_dropped: stat("rx_dropped"),
                tx_dropped: stat("tx_dropped"),
            },
        });
    }
    Ok(out)
}

/// The IPv4 default route from `/proc/net/route` (the lowest metric).
pub fn default_v4(proc_root: &Path) -> Option<Route> {
    let t = std::fs::read_to_string(proc_root.join("net/route")).ok()?;
    let mut best: Option<(u32, Route)> = None;
    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    for l in t.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (dest, gw, flags, metric, mask) = (
            hex_u32(f[1])?,
            hex_u32(f[2])?,
            hex_u32(f[3])?,
            f[6].parse::<u32>().unwrap_or(0),
            hex_u32(f[7])?,
        );
        if dest != 0 || mask != 0 || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
            continue;
        }
        // Little-endian in the file: the first octet is the low byte.
        let gateway = (gw != 0).then(|| text(&Ipv4Addr::from(gw.swap_bytes()).to_string()));
        let r = Route {
            interface: text(f[0]),
            gateway,
        };
        if best.as_ref().is_none_or(|(m, _)| metric < *m) {
            best = Some((metric, r));
        }
    }
    best.map(|(_, r)| r)
}

/// The IPv6 default route from `/proc/net/ipv6_route`.
pub fn default_v6(proc_root: &Path) -> Option<Route> {
    let t = std::fs::read_to_string(proc_root.join("net/ipv6_route")).ok()?;
    // dest plen src splen nexthop metric refcnt use flags iface
    for l in t.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let flags = hex_u32(f[8]).unwrap_or(0);
        if f[0] != "00000000000000000000000000000000"
            || f[1] != "00"
            || flags & RTF_UP == 0
            || flags & RTF_REJECT != 0
            || f[9] == "lo"
        {
            continue;
        }
        let gateway = u128::from_str_radix(f[4], 16)
            .ok()
            .filter(|g| *g != 0)
            .map(|g| text(&Ipv6Addr::from(g).to_string()));
        return Some(Route {
            interface: text(f[9]),
            gateway,
        });
    }
    None
}

/// The neighbour entry of `gateway` on `interface` from `/proc/net/arp`.
pub fn neighbour(proc_root: &Path, gateway: &str, interface: &str) -> Option<Neighbour> {
    let t = std::fs::read_to_string(proc_root.join("net/arp")).ok()?;
    // IP address  HW type  Flags  HW address  Mask  Device
    t.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[0] != gateway || f[5] != interface {
            return None;
        }
        let flags = hex_u32(f[2]).unwrap_or(0);
        Some(Neighbour {
            address: text(gateway),
            interface: text(interface),
            state: if flags & ATF_COM != 0 {
                NeighbourState::Resolved
            } else {
                NeighbourState::Unresolved
            },
        })
    })
}

/// The whole network part of a snapshot.
pub fn collect(
    sys_root: &Path,
    proc_root: &Path,
    cfg: &NetworkConfig,
    addresses: &BTreeMap<String, Vec<String>>,
    tcp: Vec<TcpCheck>,
) -> Result<Network, String> {
    let interfaces = interfaces(sys_root, cfg, addresses)?;
    let default_v4 = default_v4(proc_root);
    let gateway = default_v4.as_ref().and_then(|r| {
        r.gateway
            .as_ref()
            .and_then(|g| neighbour(proc_root, g, &r.interface))
    });
    Ok(Network {
        interfaces,
        default_v4,
        default_v6: default_v6(proc_root),
        gateway,
        tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// A fake tree with the kernel's formats: lo, eth0 (up, carrier),
    /// eth1 (administratively down: reading its carrier fails).
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for (n, flags, kind, mac, oper) in [
            ("lo", "0x9", "772", "00:00:00:00:00:00", "unknown"),
            ("eth0", "0x1003", "1", "52:54:00:AB:CD:EF", "up"),
            ("eth1", "0x1002", "1", "52:54:00:00:00:02", "down"),
        ] {
            let d = format!("sys/class/net/{n}");
            put(r, &format!("{d}/flags"), &format!("{flags}\n"));
            put(r, &format!("{d}/type"), &format!("{kind}\n"));
            put(r, &format!("{d}/address"), &format!("{mac}\n"));
            put(r, &format!("{d}/operstate"), &format!("{oper}\n"));
            put(r, &format!("{d}/mtu"), "1500\n");
            for c in ["rx_packets", "tx_packets", "rx_errors", "tx_errors"] {
                put(r, &format!("{d}/statistics/{c}"), "7\n");
            }
        }
        put(r, "sys/class/net/eth0/carrier", "1\n");
        put(
            r,
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        put(
            r,
            "proc/net/ipv6_route",
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
             fec00000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n",
        );
        put(
            r,
            "proc/net/arp",
            "IP address       HW type     Flags       HW address            Mask     Device\n\
             10.0.2.2         0x1         0x2         52:55:0a:00:02:02     *        eth0\n",
        );
        t
    }

    #[test]
    fn interfaces_routes_and_neighbour_from_a_fake_tree() {
        let t = tree();
        let (sys, proc) = (t.path().join("sys"), t.path().join("proc"));
        let addrs = BTreeMap::from([("eth0".to_string(), vec!["10.0.2.15/24".to_string()])]);
        let n = collect(&sys, &proc, &NetworkConfig::default(), &addrs, vec![]).unwrap();
        let names: Vec<&str> = n.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]); // no loopback
        let e0 = &n.interfaces[0];
        assert!(e0.up && e0.carrier);
        assert_eq!(e0.mac.as_str(), "52:54:00:ab:cd:ef");
        assert_eq!(e0.addresses, vec![Text::from("10.0.2.15/24")]);
        assert_eq!(e0.counters.rx_packets, 7);
        let e1 = &n.interfaces[1];
        assert!(!e1.up && !e1.carrier);
        assert_eq!(e1.operstate.as_str(), "down");
        let r = n.default_v4.clone().unwrap();
        assert_eq!(
            (r.interface.as_str(), r.gateway.as_deref()),
            ("eth0", Some("10.0.2.2"))
        );
        assert_eq!(n.default_v6, None); // the lo reject route is not one
        assert_eq!(n.gateway.unwrap().state, NeighbourState::Resolved);
        let only = NetworkConfig {
            exclude: vec!["eth1".into()],
            ..Default::default()
        };
        let n = collect(&sys, &proc, &only, &addrs, vec![]).unwrap();
        assert_eq!(n.interfaces.len(), 1);
    }

    #[test]
    fn a_deleted_route_and_a_failed_neighbour() {
        let t = tree();
        let proc = t.path().join("proc");
        put(
            t.path(),
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        assert_eq!(default_v4(&proc), None);
        put(
            t.path(),
            "proc/net/arp",
            "IP address       HW type     Flags       HW address            Mask     Device\n\
             10.0.2.2         0x1         0x0         00:00:00:00:00:00     *        eth0\n",
        );
        let g = neighbour(&proc, "10.0.2.2", "eth0").unwrap();
        assert_eq!(g.state, NeighbourState::Unresolved);
        assert_eq!(neighbour(&proc, "10.0.2.2", "eth1"), None);
        put(
            t.path(),
            "proc/net/ipv6_route",
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000002 00000400 00000001 00000000 00000003     eth0\n",
        );
        let r6 = default_v6(&proc).unwrap();
        assert_eq!(r6.gateway.as_deref(), Some("fe80::2"));
    }

    #[test]
    fn shape_changes_with_links_not_counters() {
        let t = tree();
        let (sys, proc) = (t.path().join("sys"), t.path().join("proc"));
        let none = BTreeMap::new();
        let cfg = NetworkConfig::default();
        let a = collect(&sys, &proc, &cfg, &none, vec![]).unwrap().shape();
        put(
            t.path(),
            "sys/class/net/eth0/statistics/rx_packets",
            "9000\n",
        );
        assert_eq!(
            a,
            collect(&sys, &proc, &cfg, &none, vec![]).unwrap().shape()
        );
        put(t.path(), "sys/class/net/eth0/carrier", "0\n");
        assert_ne!(
            a,
            collect(&sys, &proc, &cfg, &none, vec![]).unwrap().shape()
        );
    }

    #[test]
    fn the_running_kernel_has_addresses_for_loopback() {
        let a = kernel_addresses();
        assert!(
            a.get("lo")
                .is_some_and(|v| v.iter().any(|x| x == "127.0.0.1/8")),
            "{a:?}"
        );
    }
}
