//! Feeds arbitrary text to vigild's config parser and validator (what
//! `vigild --check-config` and a reload read). Must never panic; a config
//! that validates must print (as `vigilctl config` does) to TOML that
//! parses and validates to the same config, and a reload from the
//! defaults to it must not panic.
//! Run: `cd host-watchdog/fuzz && cargo +nightly fuzz run config`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigil_watchdog::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Config::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    if c.validate().is_err() {
        return;
    }
    let printed = toml::to_string(&c).expect("prints");
    let again = Config::from_toml(&printed, Path::new("printed.toml")).expect("re-parses");
    again.validate().expect("re-validates");
    assert_eq!(again, c);
    // What a reload leaves running is itself a valid config.
    let r = Config::default().reload(c);
    r.config.validate().expect("a reload's result validates");
});
