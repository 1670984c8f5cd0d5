//! Two Go standard-library parsers that CEL's Kubernetes functions are defined by:
//! `time.ParseDuration` (behind `duration()`) and `net/url.ParseRequestURI` (behind `url()`
//! and `isURL()`). Reimplemented to accept and reject exactly what Go does, with Go's error
//! texts, so a rule gives the same verdict here as in the API server.

/// Go's `time.ParseDuration`: nanoseconds, or `None` when Go rejects the text.
pub(super) fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let whole: u128 = if int_len == 0 { 0 } else { s[..int_len].parse().ok()? };
        s = &s[int_len..];
        let mut fraction = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            fraction = &rest[..frac_len];
            s = &rest[frac_len..];
            if int_len == 0 && frac_len == 0 {
                return None;
            }
        } else if int_len == 0 {
            return None;
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        s = &s[unit_len..];
        total = total.checked_add(whole.checked_mul(unit)?)?;
        if !fraction.is_empty() {
            let scale = 10f64.powi(i32::try_from(fraction.len()).ok()?);
            let digits: f64 = fraction.parse().ok()?;
            total += (digits * (unit as f64 / scale)) as u128;
        }
        if total > 1 << 63 {
            return None;
        }
    }
    if negative {
        Some(0i64.wrapping_sub_unsigned(u64::try_from(total).ok()?))
    } else {
        i64::try_from(total).ok()
    }
}

/// Go's `url.ParseRequestURI`: the lower-cased scheme (empty for an absolute path), or the
/// error text Go's `*url.Error` prints.
pub(super) fn parse_request_uri(raw: &str) -> Result<String, String> {
    parse(raw).map_err(|e| format!("parse {}: {e}", go_quote(raw)))
}

fn parse(raw: &str) -> Result<String, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw.is_empty() {
        return Err("empty url".into());
    }
    if raw == "*" {
        return Ok(String::new());
    }
    let (scheme, rest) = split_scheme(raw)?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = match rest.strip_suffix('?') {
        Some(stripped) if rest.matches('?').count() == 1 => stripped,
        _ => rest.split_once('?').map_or(rest, |(before, _)| before),
    };
    if !rest.starts_with('/') {
        return if scheme.is_empty() { Err("invalid URI for request".into()) } else { Ok(scheme) };
    }
    let mut path = rest;
    if !scheme.is_empty()
        && let Some(after) = rest.strip_prefix("//")
    {
        let (authority, tail) = after.find('/').map_or((after, ""), |i| (&after[..i], &after[i..]));
        parse_authority(authority)?;
        path = tail;
    }
    unescape(path, Mode::Path)?;
    Ok(scheme)
}

/// `scheme:rest`, or no scheme when the text does not start with one.
fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_authority(authority: &str) -> Result<(), String> {
    let at = authority.rfind('@');
    parse_host(at.map_or(authority, |i| &authority[i + 1..]))?;
    if let Some(i) = at {
        let userinfo = &authority[..i];
        let valid = userinfo.chars().all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c));
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        for part in userinfo.splitn(2, ':') {
            unescape(part, Mode::UserPassword)?;
        }
    }
    Ok(())
}

fn parse_host(host: &str) -> Result<(), String> {
    if host.starts_with('[') {
        let end = host.rfind(']').ok_or("missing ']' in host")?;
        check_port(&host[end + 1..])?;
        if let Some(zone) = host[..end].find("%25") {
            unescape(&host[..zone], Mode::Host)?;
            unescape(&host[zone..end], Mode::Zone)?;
            return unescape(&host[end..], Mode::Host);
        }
    } else if let Some(colon) = host.rfind(':') {
        check_port(&host[colon..])?;
    }
    unescape(host, Mode::Host)
}

fn check_port(colon_port: &str) -> Result<(), String> {
    let valid = colon_port.is_empty()
        || colon_port.strip_prefix(':').is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    if valid { Ok(()) } else { Err(format!("invalid port {} after host", go_quote(colon_port))) }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
}

/// Go's `unescape` validity checks (the decoded text itself is not needed).
fn unescape(s: &str, mode: Mode) -> Result<(), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Up to three characters (not bytes: the text after `%` may be multi-byte).
                let escape_len = s[i..].char_indices().nth(3).map_or(s.len() - i, |(at, _)| at);
                let escape = &s[i..i + escape_len];
                let hex = |j: usize| bytes.get(j).copied().and_then(|b| (b as char).to_digit(16));
                let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(format!("invalid URL escape {}", go_quote(escape)));
                };
                if mode == Mode::Host && high < 8 && escape != "%25" {
                    return Err(format!("invalid URL escape {}", go_quote(escape)));
                }
                let byte = (high << 4 | low) as u8;
                if mode == Mode::Zone && escape != "%25" && byte != b' ' && host_byte_needs_escape(byte) {
                    return Err(format!("invalid URL escape {}", go_quote(escape)));
                }
                i += 3;
            }
            b if matches!(mode, Mode::Host | Mode::Zone) && b < 0x80 && host_byte_needs_escape(b) => {
                return Err(format!("invalid character {} in host name", go_quote(&s[i..i + 1])));
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go's `shouldEscape(c, encodeHost)` for ASCII bytes.
fn host_byte_needs_escape(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&b))
}

/// Go's `%q` for a string (`strconv.Quote`).
fn go_quote(s: &str) -> String {
    crate::schema::message::go_quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("1ms"), Some(1_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration(".5s"), Some(500_000_000));
        assert_eq!(parse_duration("-2us"), Some(-2_000));
        assert_eq!(parse_duration("0"), Some(0));
        for bad in ["", "1", "s", "1x", ".s", "1.5", "-", "9999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_multi_byte_character_after_percent_is_an_error_not_a_panic() {
        let got = parse_request_uri("http://x/%\u{20ac}");
        assert!(got.as_ref().is_err_and(|e| e.contains("invalid URL escape")), "{got:?}");
    }

    #[test]
    fn request_uris_like_go() {
        assert_eq!(parse_request_uri("HTTPS://example.com:8443/a?b"), Ok("https".into()));
        assert_eq!(parse_request_uri("file:///opt/filter.wasm"), Ok("file".into()));
        assert_eq!(parse_request_uri("oci://ghcr.io/org/img:1.0"), Ok("oci".into()));
        assert_eq!(parse_request_uri("mailto:x@example.com"), Ok("mailto".into()));
        assert_eq!(parse_request_uri("/abs/path"), Ok(String::new()));
        assert_eq!(parse_request_uri("test"), Err(r#"parse "test": invalid URI for request"#.into()));
        assert_eq!(parse_request_uri(":x"), Err(r#"parse ":x": missing protocol scheme"#.into()));
        assert_eq!(
            parse_request_uri("http://#%blah$#@"),
            Err(r#"parse "http://#%blah$#@": net/url: invalid userinfo"#.into())
        );
        assert_eq!(
            parse_request_uri("http://host:port"),
            Err(r#"parse "http://host:port": invalid port ":port" after host"#.into())
        );
        assert_eq!(
            parse_request_uri("http://a b"),
            Err(r#"parse "http://a b": invalid character " " in host name"#.into())
        );
        assert_eq!(
            parse_request_uri("http://x/%zz"),
            Err(r#"parse "http://x/%zz": invalid URL escape "%zz""#.into())
        );
        assert!(parse_request_uri("http://x\n").is_err());
        assert!(parse_request_uri("").is_err());
    }
}
