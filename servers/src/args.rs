//! Value parsers shared by every `kpath` subcommand, so `-d` and `--keepalive` mean one thing
//! wherever they appear (servers sits below cli, so both crates reach these).

/// `-d SECS`: a positive, finite number of seconds; fractions allowed (`-d 0.5`), 0 refused.
/// Every subcommand with a duration parses it here, so none runs for "0 seconds".
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v > 0.0 && v.is_finite() && v <= 1e9 {
        Ok(v)
    } else {
        Err(format!(
            "{s}: a duration must be a positive number of seconds"
        ))
    }
}

/// `--keepalive N`: requests per connection before the server closes it; 1 closes after every
/// reply and 0 means unlimited, as Apache's `MaxKeepAliveRequests 0` does. Returns the limit
/// (`None`: unlimited).
pub fn keepalive_limit(n: u32) -> Option<u32> {
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_positive_and_may_be_fractional() {
        assert_eq!(seconds("3"), Ok(3.0));
        assert_eq!(seconds("0.25"), Ok(0.25));
        for bad in ["0", "-1", "0.0", "nan", "inf", "x", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keepalive_zero_is_unlimited() {
        assert_eq!(keepalive_limit(0), None);
        assert_eq!(keepalive_limit(1), Some(1));
        assert_eq!(keepalive_limit(100), Some(100));
    }
}
