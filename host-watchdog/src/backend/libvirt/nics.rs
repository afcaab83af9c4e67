//! A domain's vNICs: read from its live XML, their link set, and detached
//! and attached again. The XML work is pure (tested on text); the calls
//! are libvirt's `virDomainUpdateDeviceFlags`, `virDomainDetachDeviceFlags`
//! and `virDomainAttachDeviceFlags`, live only.

use std::time::{Duration, Instant};

use super::{call, BackendError, Libvirt};
use crate::engine::HostNic;

/// How long a detached NIC may take to go (PCIe hot-unplug waits ~5 s for
/// the guest) before it is attached again anyway.
const UNPLUG_WAIT: Duration = Duration::from_secs(20);

/// The domain's vNICs from its XML (taps are the host's: see
/// `host::net::fill_taps`).
pub fn parse_nics(xml: &str) -> Vec<HostNic> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("interface") && n.parent().is_some_and(|p| p.has_tag_name("devices"))
        })
        .filter_map(|n| {
            let child = |t: &str| n.children().find(|c| c.has_tag_name(t));
            let mac = child("mac")?.attribute("address")?.to_lowercase();
            Some(HostNic {
                mac,
                target: child("target")
                    .and_then(|t| t.attribute("dev"))
                    .map(str::to_string),
                link_up: child("link").and_then(|l| l.attribute("state")) != Some("down"),
                bridge: child("source")
                    .and_then(|s| s.attribute("bridge"))
                    .map(str::to_string),
                tap: None,
            })
        })
        .collect()
}

/// The `<interface>` element with this MAC, as it stands in `xml`.
pub fn interface_xml<'a>(xml: &'a str, mac: &str) -> Option<&'a str> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc.descendants().find(|n| {
        n.has_tag_name("interface")
            && n.children().any(|c| {
                c.has_tag_name("mac")
                    && c.attribute("address")
                        .is_some_and(|a| a.eq_ignore_ascii_case(mac))
            })
    })?;
    xml.get(node.range())
}

/// `iface` without its child elements named `drop`, with `extra` added at
/// its end.
pub fn edit_interface(iface: &str, drop: &[&str], extra: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(iface).ok()?;
    let root = doc.root_element();
    let mut cuts: Vec<std::ops::Range<usize>> = root
        .children()
        .filter(|c| c.is_element() && drop.contains(&c.tag_name().name()))
        .map(|c| c.range())
        .collect();
    cuts.sort_by_key(|r| std::cmp::Reverse(r.start));
    let mut out = iface.to_string();
    for r in cuts {
        out.replace_range(r, "");
    }
    let end = out.rfind("</interface>")?;
    out.insert_str(end, extra);
    Some(out)
}

impl Libvirt {
    fn live_xml(&self, name: &str) -> Result<String, BackendError> {
        self.domain(name)?
            .xml_desc(0)
            .map_err(|e| call("xml", name, e))
    }

    fn interface(&self, name: &str, mac: &str) -> Result<String, BackendError> {
        let xml = self.live_xml(name)?;
        interface_xml(&xml, mac)
            .map(str::to_string)
            .ok_or_else(|| BackendError::Call {
                op: "find-nic",
                domain: name.into(),
                message: format!("no interface with MAC {mac}"),
            })
    }

    pub(super) fn nics_now(&self, name: &str) -> Result<Vec<HostNic>, BackendError> {
        Ok(parse_nics(&self.live_xml(name)?))
    }

    pub(super) fn set_link_now(&self, name: &str, mac: &str, up: bool) -> Result<(), BackendError> {
        let iface = self.interface(name, mac)?;
        let state = if up { "up" } else { "down" };
        let xml = edit_interface(&iface, &["link"], &format!("<link state='{state}'/>"))
            .ok_or_else(|| bad_xml(name))?;
        self.domain(name)?
            .update_device_flags(&xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| call("set-link", name, e))
    }

    pub(super) fn replug_now(&self, name: &str, mac: &str) -> Result<(), BackendError> {
        let iface = self.interface(name, mac)?;
        let d = self.domain(name)?;
        d.detach_device_flags(&iface, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| call("detach-nic", name, e))?;
        // The guest lets go of a PCIe device after its hot-unplug delay.
        let until = Instant::now() + UNPLUG_WAIT;
        while Instant::now() < until {
            let xml = self.live_xml(name)?;
            if interface_xml(&xml, mac).is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // Same MAC and slot; a fresh tap and alias, and the link up.
        let fresh = edit_interface(&iface, &["alias", "target", "link"], "<link state='up'/>")
            .ok_or_else(|| bad_xml(name))?;
        d.attach_device_flags(&fresh, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| call("attach-nic", name, e))
    }
}

fn bad_xml(name: &str) -> BackendError {
    BackendError::Call {
        op: "nic-xml",
        domain: name.into(),
        message: "cannot edit the interface's XML".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='qemu'><name>web</name><devices>
      <interface type='bridge'>
        <mac address='52:54:00:AA:00:01'/>
        <source bridge='br0'/>
        <target dev='vnet3'/>
        <model type='virtio'/>
        <link state='down'/>
        <alias name='net0'/>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </interface>
      <interface type='user'>
        <mac address='52:54:00:aa:00:02'/>
        <model type='virtio'/>
      </interface>
    </devices></domain>"#;

    #[test]
    fn nics_from_the_xml() {
        let n = parse_nics(XML);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].mac, "52:54:00:aa:00:01");
        assert_eq!(n[0].target.as_deref(), Some("vnet3"));
        assert_eq!(n[0].bridge.as_deref(), Some("br0"));
        assert!(!n[0].link_up);
        assert!(n[1].link_up && n[1].target.is_none() && n[1].bridge.is_none());
        assert!(parse_nics("<broken").is_empty());
    }

    #[test]
    fn the_interface_is_edited_not_rewritten() {
        let iface = interface_xml(XML, "52:54:00:aa:00:01").unwrap();
        assert!(iface.starts_with("<interface type='bridge'>") && iface.ends_with("</interface>"));
        let up = edit_interface(iface, &["link"], "<link state='up'/>").unwrap();
        assert!(!up.contains("state='down'") && up.contains("<link state='up'/></interface>"));
        assert!(up.contains("<source bridge='br0'/>") && up.contains("slot='0x00'"));
        let fresh = edit_interface(iface, &["alias", "target", "link"], "").unwrap();
        assert!(
            !fresh.contains("vnet3") && !fresh.contains("net0"),
            "{fresh}"
        );
        assert!(fresh.contains("52:54:00:AA:00:01"));
        assert_eq!(interface_xml(XML, "52:54:00:00:00:99"), None);
    }
}
