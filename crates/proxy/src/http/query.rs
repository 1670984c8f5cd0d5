//! Reading a request's query string.

/// The first value of parameter `name` in `query`, as written (not percent-decoded); a
/// parameter without `=` has the empty value.
pub fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_value_as_written_and_bare_names_are_empty() {
        assert_eq!(param("x=1&user=bob&user=eve", "user"), Some("bob"));
        assert_eq!(param("debug&region=eu", "debug"), Some(""));
        assert_eq!(param("region=eu", "debug"), None);
    }
}
