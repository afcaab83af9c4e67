//! The network part of `vigilctl status` and `probe`.

use serde_json::Value;

/// The network part of `status`: each guest interface with the host's side
/// of it (matched by MAC), the default routes, the gateway, the TCP checks;
/// host vNICs the guest does not show are listed too.
pub fn network_lines(net: &Value, vnics: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let vnics: Vec<&Value> = vnics.as_array().into_iter().flatten().collect();
    let host_side = |mac: &str| {
        vnics
            .iter()
            .find(|n| {
                n["mac"]
                    .as_str()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            })
            .map(|n| {
                let dev = n["target"].as_str().unwrap_or("user-mode");
                let link = if n["link_up"] == Value::Bool(true) {
                    "up"
                } else {
                    "DOWN"
                };
                format!("host {dev} link {link}")
            })
    };
    let mut shown = Vec::new();
    for i in net["interfaces"].as_array().into_iter().flatten() {
        let mac = s(&i["mac"]);
        let state = match (i["up"].as_bool(), i["carrier"].as_bool()) {
            (Some(true), Some(true)) => "up".to_string(),
            (Some(true), _) => "NO CARRIER".to_string(),
            _ => "DOWN".to_string(),
        };
        let addrs: Vec<String> = i["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(&s)
            .collect();
        let c = &i["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        out.push(format!(
            "interface:     {} {mac} {state} {} rx {} tx {} err {}/{} drop {}/{} mtu {} ({}){}",
            s(&i["name"]),
            if addrs.is_empty() {
                "no address".to_string()
            } else {
                addrs.join(",")
            },
            n("rx_packets"),
            n("tx_packets"),
            n("rx_errors"),
            n("tx_errors"),
            n("rx_dropped"),
            n("tx_dropped"),
            i["mtu"].as_u64().unwrap_or(0),
            s(&i["operstate"]),
            host_side(&mac)
                .map(|h| format!("; {h}"))
                .unwrap_or_default()
        ));
        shown.push(mac.to_lowercase());
    }
    for v in &vnics {
        let mac = s(&v["mac"]);
        if !shown.contains(&mac.to_lowercase()) {
            out.push(format!(
                "vnic:          {mac} {}",
                host_side(&mac).unwrap_or_default()
            ));
        }
    }
    if net.is_object() {
        let route = |r: &Value| {
            if r.is_null() {
                "none".to_string()
            } else {
                format!(
                    "via {} on {}",
                    r["gateway"].as_str().unwrap_or("-"),
                    s(&r["interface"])
                )
            }
        };
        out.push(format!(
            "routes:        v4 {}, v6 {}",
            route(&net["default_v4"]),
            route(&net["default_v6"])
        ));
        if let Some(g) = net["gateway"].as_object() {
            out.push(format!(
                "gateway:       {} {}",
                g.get("address").map(&s).unwrap_or_default(),
                g.get("state").map(&s).unwrap_or_default().to_lowercase()
            ));
        }
        for t in net["tcp"].as_array().into_iter().flatten() {
            out.push(format!(
                "tcp check:     {} {}",
                s(&t["target"]),
                if t["ok"] == Value::Bool(true) {
                    format!("ok ({} ms)", t["latency_ms"])
                } else {
                    format!(
                        "FAILED x{}: {}",
                        t["failures"],
                        t["error"].as_str().unwrap_or("no answer")
                    )
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_each_interface_with_the_hosts_side() {
        let net = serde_json::json!({
            "interfaces": [{"name": "eth0", "mac": "52:54:00:00:00:01", "up": true,
                "carrier": false, "operstate": "down", "mtu": 1500,
                "addresses": ["10.0.2.15/24"],
                "counters": {"rx_packets": 5, "tx_packets": 6, "rx_errors": 0,
                    "tx_errors": 0, "rx_dropped": 1, "tx_dropped": 0}}],
            "default_v4": {"interface": "eth0", "gateway": "10.0.2.2"},
            "default_v6": null,
            "gateway": {"address": "10.0.2.2", "interface": "eth0", "state": "Resolved"},
            "tcp": [{"target": "10.0.2.2:80", "ok": false, "latency_ms": 3,
                "failures": 2, "error": "connection refused"}]
        });
        let vnics = serde_json::json!([
            {"mac": "52:54:00:00:00:01", "target": "vnet0", "link_up": false},
            {"mac": "52:54:00:00:00:02", "target": null, "link_up": true}
        ]);
        let lines = network_lines(&net, &vnics);
        assert!(
            lines[0].contains("eth0 52:54:00:00:00:01 NO CARRIER 10.0.2.15/24"),
            "{lines:?}"
        );
        assert!(
            lines[0].ends_with("mtu 1500 (down); host vnet0 link DOWN"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("52:54:00:00:00:02 host user-mode link up"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("v4 via 10.0.2.2 on eth0, v6 none"),
            "{lines:?}"
        );
        assert!(lines[3].contains("10.0.2.2 resolved"), "{lines:?}");
        assert!(
            lines[4].contains("FAILED x2: connection refused"),
            "{lines:?}"
        );
        assert!(network_lines(&Value::Null, &Value::Null).is_empty());
    }
}
