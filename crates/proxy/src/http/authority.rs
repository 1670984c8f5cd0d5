//! A request's authority, parsed once: routing reads it as text, forwarding reuses it.

use http::Request;
use http::header::HOST;
use http::uri::Authority as UriAuthority;

/// A request's authority: `host[:port]` as the client wrote it, lowercased, parsed once: routing
/// reads it as text and forwarding reuses it as the upstream request's `:authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    parsed: UriAuthority,
    /// Where the host ends in the text (a `:port` or nothing follows).
    host_len: usize,
    port: u16,
}

impl Authority {
    /// The authority of `req`: the URI's (absolute-form, HTTP/2 `:authority`, CONNECT), else
    /// `Host`. `None` when there is none or it is not `host[:port]`.
    pub fn of<B>(req: &Request<B>, default_port: u16) -> Option<Self> {
        match req.uri().authority() {
            Some(authority) => Self::from_parsed(authority.clone(), default_port),
            None => Self::parse(req.headers().get(HOST)?.to_str().ok()?, default_port),
        }
    }

    /// Parses `host[:port]`.
    pub fn parse(text: &str, default_port: u16) -> Option<Self> {
        Self::from_parsed(text.parse().ok()?, default_port)
    }

    /// Checks and splits an authority `http` has already parsed, in one pass over its bytes
    /// (its own `host()` and `port()` rescan the text on every call).
    fn from_parsed(parsed: UriAuthority, default_port: u16) -> Option<Self> {
        let text = parsed.as_str().as_bytes();
        let mut uppercase = false;
        for &byte in text {
            if byte == b'@' {
                return None;
            }
            uppercase |= byte.is_ascii_uppercase();
        }
        let host_len = match text.first() {
            Some(b'[') => text.iter().position(|&b| b == b']')? + 1,
            _ => text.iter().rposition(|&b| b == b':').unwrap_or(text.len()),
        };
        let port = match text[host_len..] {
            [] => default_port,
            [b':', ref digits @ ..] => parse_port(digits)?,
            _ => return None,
        };
        if host_len == 0 {
            return None;
        }
        let parsed = if uppercase { parsed.as_str().to_ascii_lowercase().parse().ok()? } else { parsed };
        Some(Authority { parsed, host_len, port })
    }

    /// The text, lowercased (virtual host domains are lowercase).
    pub fn text(&self) -> &str {
        self.parsed.as_str()
    }

    /// The host part (IPv6 with its brackets).
    pub fn host(&self) -> &str {
        &self.parsed.as_str()[..self.host_len]
    }

    /// The port, or the default port when the authority has none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// As a URI authority (a reference-counted clone away from a request's).
    pub fn uri(&self) -> &UriAuthority {
        &self.parsed
    }
}

/// A port: one or more ASCII digits, at most 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_parse_with_default_ports() {
        let a = Authority::parse("Account-Service:8083", 80).expect("valid");
        assert_eq!((a.text(), a.host(), a.port()), ("account-service:8083", "account-service", 8083));
        let b = Authority::parse("foo", 80).expect("valid");
        assert_eq!((b.host(), b.port()), ("foo", 80));
        let v6 = Authority::parse("[::1]:80", 0).expect("valid");
        assert_eq!((v6.host(), v6.port(), v6.uri().as_str()), ("[::1]", 80, "[::1]:80"));
        assert!(Authority::parse("user@foo:80", 80).is_none());
        assert!(Authority::parse("foo:bar", 80).is_none());
        assert!(Authority::parse("", 80).is_none());
        assert!(Authority::parse("foo:", 80).is_none());
        let bare_v6 = Authority::parse("[::1]", 443).expect("valid");
        assert_eq!((bare_v6.host(), bare_v6.port()), ("[::1]", 443));
        let max = Authority::parse("a.b:65535", 80).expect("valid");
        assert_eq!((max.host(), max.port()), ("a.b", 65535));
        for hostile in ["foo:+80", "foo:65536", "foo:-1", ":80", "[::1]x", "[::1]:", "a:80:90", "foo:8 0"] {
            assert!(Authority::parse(hostile, 80).is_none(), "{hostile} accepted");
        }
    }
}
