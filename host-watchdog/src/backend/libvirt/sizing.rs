//! A domain's size, read and changed: the persistent definition (from the
//! next boot) and the running domain (where hot-plug allows).

use virt::sys;

use super::{call, Libvirt};
use crate::backend::{BackendError, Sizing};
use crate::engine::Resize;

/// `<tag ...>N</tag>` of a domain's XML, in KiB (libvirt writes KiB).
fn kib(xml: &str, tag: &str) -> Option<u64> {
    let at = xml.find(&format!("<{tag}"))?;
    let rest = &xml[at..];
    let open = rest.find('>')?;
    let close = rest.find(&format!("</{tag}>"))?;
    rest.get(open + 1..close)?.trim().parse().ok()
}

impl Libvirt {
    pub(super) fn sizing_now(&self, name: &str) -> Result<Sizing, BackendError> {
        let d = self.domain(name)?;
        let xml = d
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| call("dumpxml", name, e))?;
        let memory_kib = kib(&xml, "memory").ok_or_else(|| BackendError::Call {
            op: "dumpxml",
            domain: name.into(),
            message: "no <memory> in the definition".into(),
        })?;
        let vcpus = d
            .vcpus_flags(sys::VIR_DOMAIN_VCPU_CONFIG)
            .map_err(|e| call("vcpucount", name, e))?;
        let active = d.is_active().map_err(|e| call("domstate", name, e))?;
        let (live_max_kib, live_max_vcpus) = if active {
            let info = d.info().map_err(|e| call("dominfo", name, e))?;
            let max = d
                .vcpus_flags(sys::VIR_DOMAIN_VCPU_LIVE | sys::VIR_DOMAIN_VCPU_MAXIMUM)
                .ok();
            (Some(info.max_mem), max)
        } else {
            (None, None)
        };
        let host_cpus = self
            .conn()?
            .node_info()
            .map(|n| n.cpus)
            .map_err(|e| call("nodeinfo", name, e))?;
        Ok(Sizing {
            memory_kib,
            current_kib: kib(&xml, "currentMemory").unwrap_or(memory_kib),
            vcpus,
            live_max_kib,
            live_max_vcpus,
            host_cpus,
        })
    }

    pub(super) fn resize_now(&self, name: &str, r: &Resize) -> Result<String, BackendError> {
        let d = self.domain(name)?;
        let now = self.sizing_now(name)?;
        let mut said = Vec::new();
        if let Some((_, kib)) = r.memory_kib {
            // The maximum first (libvirt lowers the current size with a
            // lower maximum), then the current size.
            d.set_memory_flags(
                kib,
                sys::VIR_DOMAIN_MEM_CONFIG | sys::VIR_DOMAIN_MEM_MAXIMUM,
            )
            .and_then(|_| d.set_memory_flags(kib, sys::VIR_DOMAIN_MEM_CONFIG))
            .map_err(|e| call("setmaxmem --config", name, e))?;
            said.push(format!("memory {kib} KiB in the definition"));
            match now.live_max_kib {
                Some(max) if r.live && kib <= max => {
                    d.set_memory_flags(kib, sys::VIR_DOMAIN_MEM_LIVE)
                        .map_err(|e| call("setmem --live", name, e))?;
                    said.push(format!("{kib} KiB live (balloon)"));
                }
                Some(max) if r.live => said.push(format!(
                    "live memory left: its maximum is {max} KiB until the next boot"
                )),
                _ => {}
            }
        }
        if let Some((_, n)) = r.vcpus {
            // Growing: the maximum, then the count; shrinking: the other
            // way round (a count above the maximum is refused).
            let max = sys::VIR_DOMAIN_VCPU_CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM;
            let cur = sys::VIR_DOMAIN_VCPU_CONFIG;
            let order = if n >= now.vcpus {
                [max, cur]
            } else {
                [cur, max]
            };
            for flags in order {
                d.set_vcpus_flags(n, flags)
                    .map_err(|e| call("setvcpus --config", name, e))?;
            }
            said.push(format!("{n} vCPUs in the definition"));
            match now.live_max_vcpus {
                Some(max) if r.live && n <= max => {
                    d.set_vcpus_flags(n, sys::VIR_DOMAIN_VCPU_LIVE)
                        .map_err(|e| call("setvcpus --live", name, e))?;
                    said.push(format!("{n} vCPUs live (hot-plug)"));
                }
                Some(max) if r.live => said.push(format!(
                    "live vCPUs left: its maximum is {max} until the next boot"
                )),
                _ => {}
            }
        }
        Ok(said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_from_the_definition() {
        let xml = "<domain><memory unit='KiB'>1048576</memory>\n<currentMemory unit='KiB'>524288</currentMemory><vcpu placement='static'>2</vcpu></domain>";
        assert_eq!(kib(xml, "memory"), Some(1_048_576));
        assert_eq!(kib(xml, "currentMemory"), Some(524_288));
        assert_eq!(kib("<domain/>", "memory"), None);
    }
}
