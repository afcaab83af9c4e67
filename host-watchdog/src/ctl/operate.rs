//! The verbs that change something (maintenance, release, a manual
//! action, the host's state, arming, reload) and `config`.

use super::*;

impl Client {
    /// `maintenance DOM on|off [--for D]`.
    pub fn maintenance(
        &self,
        domain: &str,
        on: bool,
        dur: Option<&str>,
        json: bool,
    ) -> Result<(), CtlError> {
        if dur.is_some() && !on {
            return Err(err(2, "--for only goes with `on`"));
        }
        let for_ms = dur.map(parse_duration_ms).transpose()?;
        let data = self.call(&Request::Maintenance {
            domain: domain.into(),
            on,
            for_ms,
        })?;
        if json {
            Self::print_json(&data);
        } else {
            println!(
                "{domain}: maintenance {}; state {}",
                if on { "on" } else { "off" },
                data["state"].as_str().unwrap_or("?")
            );
        }
        Ok(())
    }

    /// `release DOM`.
    pub fn release(&self, domain: &str, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Release {
            domain: domain.into(),
        })?;
        if json {
            Self::print_json(&data);
        } else {
            println!(
                "{domain}: released; state {}",
                data["state"].as_str().unwrap_or("?")
            );
        }
        Ok(())
    }

    /// `action DOM ACTION`.
    pub fn act(&self, domain: &str, action: &str, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Act {
            domain: domain.into(),
            action: action.into(),
        })?;
        if json {
            Self::print_json(&data);
        } else {
            println!("{domain}: {action} requested (action #{})", data["id"]);
        }
        Ok(())
    }

    /// `host [--clear]`.
    pub fn host(&self, clear: bool, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Host { clear })?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
        println!("host health:   {}", text(&data["health"]));
        watchdog_lines(&data["watchdog"]);
        let faults = data["faults"].as_array().cloned().unwrap_or_default();
        for f in &faults {
            let subject = f["subject"]
                .as_str()
                .map_or(String::new(), |s| format!(" on {s}"));
            println!(
                "open fault:    #{} {} ({}){subject}, since {}",
                f["id"],
                text(&f["kind"]),
                text(&f["layer"]),
                fmt_time(f["located"].as_u64().unwrap_or(0))
            );
        }
        let reasons = data["reasons"].as_array().cloned().unwrap_or_default();
        if reasons.is_empty() {
            println!("reasons:       none");
        }
        for r in reasons {
            let until = match r["until"].as_u64() {
                Some(u) => format!("until {}", fmt_time(u)),
                None => "until it ends or is cleared".into(),
            };
            println!(
                "  {:<18} {:<9} since {}, {until}: {}",
                text(&r["reason"]),
                text(&r["health"]),
                fmt_time(r["since"].as_u64().unwrap_or(0)),
                text(&r["why"])
            );
        }
        Ok(())
    }

    /// `arm` / `disarm`.
    pub fn arm(&self, arm: bool, json: bool) -> Result<(), CtlError> {
        let data = self.call(if arm { &Request::Arm } else { &Request::Disarm })?;
        if json {
            Self::print_json(&data);
        } else {
            println!(
                "{}",
                if arm {
                    "armed: recovery actions are taken"
                } else {
                    "disarmed: faults are detected and recorded, no recovery actions"
                }
            );
        }
        Ok(())
    }

    /// `reload`: vigild reads its config file again.
    pub fn reload(&self, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Reload)?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let list = |v: &Value| {
            let items: Vec<String> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if items.is_empty() {
                "nothing".to_string()
            } else {
                items.join(", ")
            }
        };
        println!(
            "config reloaded from {}: applied: {}",
            data["path"].as_str().unwrap_or("?"),
            list(&data["applied"])
        );
        if data["needs_restart"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            println!(
                "changed but kept until vigild restarts: {}",
                list(&data["needs_restart"])
            );
        }
        Ok(())
    }

    /// `config`: the config vigild runs with (TOML; JSON with --json).
    pub fn config(&self, json: bool) -> Result<(), CtlError> {
        let data = self.call(&Request::Config)?;
        if json {
            Self::print_json(&data);
            return Ok(());
        }
        let c: crate::config::Config =
            serde_json::from_value(data).map_err(|e| err(1, e.to_string()))?;
        print!(
            "{}",
            toml::to_string(&c).map_err(|e| err(1, e.to_string()))?
        );
        Ok(())
    }
}
