//! Durations as the CLI's flags take them: a whole number with s, m, h or d
//! (`30s`, `5m`, `12h`, `30d`), or plain seconds.

use anyhow::{bail, Result};

/// The seconds `text` says, for the flag named `flag` (which errors name).
pub fn parse_secs(flag: &str, text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{flag} {text:?}: use a number with s, m, h or d, e.g. 30s or 12h"),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.saturating_mul(scale)),
        _ => bail!("{flag} {text:?}: use a whole number above 0 with s, m, h or d, e.g. 30s or 12h"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_secs;

    #[test]
    fn durations() {
        assert_eq!(parse_secs("--x", "90m").unwrap(), 5400);
        assert_eq!(parse_secs("--x", "30d").unwrap(), 2_592_000);
        assert_eq!(parse_secs("--x", "15").unwrap(), 15);
        assert_eq!(parse_secs("--x", " 30s ").unwrap(), 30);
        for bad in ["", "0h", "h", "5w", "-1d", "1.5h", "1 h"] {
            let e = parse_secs("--x", bad).unwrap_err().to_string();
            assert!(e.starts_with("--x "), "{bad}: {e}");
        }
    }
}
