//! Parsing of human units in the config: durations (`"250ms"`, `"30s"`, `"5m"`) and byte
//! sizes (`8192`, `"64KiB"`, `"10MiB"`, `"1GiB"`). Errors are plain messages; the caller
//! adds the config path.

use std::time::Duration;

use super::file::NumOrString;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number and a unit (ms, s, m, h), e.g. \"30s\"")
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be one of ms, s, m, h"
            ))
        }
    };
    Ok(d)
}

pub fn parse_size(v: &NumOrString) -> Result<u64, String> {
    match v {
        NumOrString::Num(n) if *n >= 0 => Ok(*n as u64),
        NumOrString::Num(n) => Err(format!("invalid size {n}: must not be negative")),
        NumOrString::Str(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (digits, unit) = t.split_at(split);
            let n: u64 = digits.parse().map_err(|_| {
                format!("invalid size {s:?}: expected bytes or a number with KiB, MiB or GiB")
            })?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "K" | "KB" => 1 << 10,
                "MiB" | "M" | "MB" => 1 << 20,
                "GiB" | "G" | "GB" => 1 << 30,
                _ => return Err(format!("invalid size {s:?}: unit must be KiB, MiB or GiB")),
            };
            n.checked_mul(mult)
                .ok_or_else(|| format!("invalid size {s:?}: too large"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").unwrap_err().contains("unit"));
        assert!(parse_duration("s")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&NumOrString::Num(10)), Ok(10));
        assert_eq!(parse_size(&NumOrString::Str("64KiB".into())), Ok(65536));
        assert_eq!(parse_size(&NumOrString::Str("10MiB".into())), Ok(10 << 20));
        assert_eq!(parse_size(&NumOrString::Str("1GiB".into())), Ok(1 << 30));
        assert!(parse_size(&NumOrString::Num(-1)).is_err());
        assert!(parse_size(&NumOrString::Str("12 parsecs".into())).is_err());
    }
}
