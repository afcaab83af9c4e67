//! Durations as people type them on both sides' command lines.

/// Parse `90`, `90s`, `500ms`, `10m`, `2h`, `1d` into milliseconds (a bare
/// number is seconds).
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("bad duration {s:?} (examples: 90, 90s, 10m, 2h, 1d)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mul = match unit {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mul).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_ms("90"), Ok(90_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("10m"), Ok(600_000));
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("1d"), Ok(86_400_000));
        for bad in ["", "ten", "5y", "-1", "1.5h", "99999999999999999999"] {
            assert!(parse_ms(bad).unwrap_err().contains("bad duration"), "{bad}");
        }
    }
}
