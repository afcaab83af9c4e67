//! `vigilctl warnings`: what the guests' trends announce.

use super::{fmt_time, Client, CtlError};
use crate::daemon::control::Request;
use crate::engine::trend::words;

impl Client {
    /// `warnings [DOM]`.
    pub fn warnings(&self, domain: Option<&str>, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Warnings {
            domain: domain.map(str::to_string),
        })?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let ws = data["warnings"].as_array().cloned().unwrap_or_default();
        if ws.is_empty() {
            println!("no open warnings");
            return Ok(());
        }
        let now = data["now"].as_u64().unwrap_or(0);
        println!(
            "{:<16} {:<22} {:<16} {:<9} {:<12} EVIDENCE",
            "DOMAIN", "WARNING", "SUBJECT", "IN", "SINCE"
        );
        for w in &ws {
            let s = |k: &str| w[k].as_str().unwrap_or("-").to_string();
            let eta = w["eta"]
                .as_u64()
                .map_or("-".to_string(), |e| words(e.saturating_sub(now)));
            println!(
                "{:<16} {:<22} {:<16} {:<9} {:<12} {}",
                s("domain"),
                s("kind"),
                s("subject"),
                eta,
                fmt_time(w["since"].as_u64().unwrap_or(0)),
                s("evidence")
            );
        }
        Ok(())
    }
}

impl Client {
    /// `advise [DOM] [--apply [--live] [ITEM…] | --revert ACTION]`.
    pub fn advise(
        &self,
        domain: Option<&str>,
        items: &[String],
        apply: bool,
        live: bool,
        revert: Option<u64>,
        json: bool,
    ) -> Result<(), CtlError> {
        let need = |what: &str| {
            domain
                .map(str::to_string)
                .ok_or_else(|| super::err(2, format!("{what} needs a domain")))
        };
        if !items.is_empty() && !apply {
            return Err(super::err(2, "recommendation items go with --apply"));
        }
        let req = match (apply, revert) {
            (true, _) => Request::AdviseApply {
                domain: need("--apply")?,
                items: items.to_vec(),
                live,
            },
            (false, Some(action)) => Request::AdviseRevert {
                domain: need("--revert")?,
                action,
            },
            (false, None) => Request::Advise {
                domain: domain.map(str::to_string),
            },
        };
        let data = self.call(&req)?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        if apply || revert.is_some() {
            println!(
                "{}: {} requested as action #{} (vigilctl events shows its outcome)",
                data["domain"].as_str().unwrap_or("?"),
                describe(&data["resize"]),
                data["action"]
            );
            return Ok(());
        }
        for vm in data["vms"].as_array().into_iter().flatten() {
            let name = vm["domain"].as_str().unwrap_or("?");
            if let Some(e) = vm["error"].as_str() {
                println!("{name}: cannot read its size: {e}");
                continue;
            }
            let s = &vm["sizing"];
            let mib = |k: &str| s[k].as_u64().unwrap_or(0) / 1024;
            println!(
                "{name}: memory {} MiB (current {} MiB), {} vCPUs (host {})",
                mib("memory_kib"),
                mib("current_kib"),
                s["vcpus"],
                s["host_cpus"]
            );
            let advice = vm["advice"].as_array().cloned().unwrap_or_default();
            if advice.is_empty() {
                println!("  nothing to recommend");
            }
            for a in &advice {
                let t = |k: &str| a[k].as_str().unwrap_or("").to_string();
                let how = if a["resize"].is_null() {
                    String::new()
                } else {
                    format!("   [vigilctl advise {name} --apply {}]", t("item"))
                };
                println!("  {:<10} {}{how}", t("item"), t("summary"));
                for e in a["evidence"].as_array().into_iter().flatten() {
                    println!("  {:<10}   because: {}", "", e.as_str().unwrap_or(""));
                }
                println!("  {:<10}   change:  {}", "", t("change"));
            }
        }
        Ok(())
    }
}

/// A resize in words.
fn describe(r: &serde_json::Value) -> String {
    serde_json::from_value::<crate::engine::Resize>(r.clone())
        .map_or_else(|_| r.to_string(), |r| format!("reconfigure {r}"))
}

impl Client {
    /// Every journal record since `since`, page by page.
    fn all_events(
        &self,
        since: Option<crate::engine::Millis>,
    ) -> Result<Vec<serde_json::Value>, CtlError> {
        let mut req = Request::Events {
            since,
            after: None,
            limit: None,
        };
        let mut all = Vec::new();
        loop {
            let data = self.call(&req)?;
            let rows = data.as_array().cloned().unwrap_or_default();
            let last = rows.last().and_then(|r| r["seq"].as_i64());
            let full = rows.len() >= crate::daemon::control::EVENTS_PAGE as usize;
            all.extend(rows);
            match last {
                Some(l) if full => {
                    req = Request::Events {
                        since: None,
                        after: Some(l),
                        limit: None,
                    }
                }
                _ => return Ok(all),
            }
        }
    }

    /// `report --html FILE [--since T]`: the figures and the journal's
    /// records over the window, drawn into one self-contained page.
    pub fn report_html(&self, since: Option<&str>, file: &std::path::Path) -> Result<(), CtlError> {
        let since = since
            .map(|s| super::parse_since(s, super::now_ms()))
            .transpose()?;
        let data = self.call(&Request::Report { since })?;
        let metrics: Vec<crate::metrics::VmMetrics> =
            serde_json::from_value(data["vms"].clone())
                .map_err(|e| super::err(1, format!("bad report from vigild: {e}")))?;
        let (from, to) = (
            data["from"].as_u64().unwrap_or(0),
            data["to"].as_u64().unwrap_or(0),
        );
        let rows = self.all_events(Some(from))?;
        let records: Vec<(crate::engine::Millis, crate::engine::Record)> = rows
            .into_iter()
            .filter_map(|r| {
                let t = r["t"].as_u64()?;
                serde_json::from_value(r["record"].clone())
                    .ok()
                    .map(|rec| (t, rec))
            })
            .collect();
        let page = crate::html::render(from, to, &metrics, &records);
        std::fs::write(file, page)
            .map_err(|e| super::err(1, format!("cannot write {}: {e}", file.display())))?;
        println!(
            "{}: {} VMs, {} records",
            file.display(),
            metrics.len(),
            records.len()
        );
        Ok(())
    }
}
