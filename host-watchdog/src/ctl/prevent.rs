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
