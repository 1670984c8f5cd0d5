//! CEL tokens: numbers, strings (quoted, triple-quoted, raw), identifiers and the operators
//! the CRD rules use. Positions are byte offsets, kept for compile error messages.

/// One lexical token.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
    Ident(String),
    Punct(&'static str),
    End,
}

/// Operators and punctuation, longest first so `<=` wins over `<`.
const PUNCTUATION: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", "{", "}", ".", ",", ":", "?", "!", "-", "+", "<",
    ">",
];

/// Splits `source` into tokens (ending with [`Token::End`]), each with its byte offset.
pub(super) fn tokenize(source: &str) -> Result<Vec<(Token, usize)>, String> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if source[i..].starts_with("//") {
            i = source[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if c.is_ascii_digit() {
            let (token, len) = number(&source[i..]).map_err(|e| format!("{e} at offset {i}"))?;
            tokens.push((token, i));
            i += len;
        } else if c == b'"'
            || c == b'\''
            || ((c == b'r' || c == b'R') && matches!(bytes.get(i + 1), Some(b'"' | b'\'')))
        {
            let (text, len) = string(&source[i..]).map_err(|e| format!("{e} at offset {i}"))?;
            tokens.push((Token::Str(text), i));
            i += len;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let len = source[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(bytes.len() - i);
            tokens.push((Token::Ident(source[i..i + len].to_owned()), i));
            i += len;
        } else if let Some(p) = PUNCTUATION.iter().find(|p| source[i..].starts_with(**p)) {
            tokens.push((Token::Punct(p), i));
            i += p.len();
        } else {
            let ch = source[i..].chars().next().unwrap_or('?');
            return Err(format!("unexpected character {ch:?} at offset {i}"));
        }
    }
    tokens.push((Token::End, bytes.len()));
    Ok(tokens)
}

/// A numeric literal at the start of `s`: decimal or hex integer, `u` suffix, or double.
fn number(s: &str) -> Result<(Token, usize), String> {
    let bytes = s.as_bytes();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let len = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
        let value = u64::from_str_radix(&hex[..len], 16).map_err(|e| format!("bad hex literal: {e}"))?;
        return integer(value, 2 + len, bytes.get(2 + len).copied());
    }
    let mut len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut is_double = false;
    if bytes.get(len) == Some(&b'.') && bytes.get(len + 1).is_some_and(u8::is_ascii_digit) {
        is_double = true;
        len += 1;
        len += s[len..].find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len() - len);
    }
    if matches!(bytes.get(len), Some(b'e' | b'E')) {
        let mut end = len + 1;
        if matches!(bytes.get(end), Some(b'+' | b'-')) {
            end += 1;
        }
        let digits = s[end..].find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len() - end);
        if digits > 0 {
            is_double = true;
            len = end + digits;
        }
    }
    if is_double {
        let value: f64 = s[..len].parse().map_err(|e| format!("bad double literal: {e}"))?;
        return Ok((Token::Double(value), len));
    }
    let value: u64 = s[..len].parse().map_err(|e| format!("bad integer literal: {e}"))?;
    integer(value, len, bytes.get(len).copied())
}

fn integer(value: u64, len: usize, next: Option<u8>) -> Result<(Token, usize), String> {
    if matches!(next, Some(b'u' | b'U')) {
        return Ok((Token::Uint(value), len + 1));
    }
    let value = i64::try_from(value).map_err(|_| "integer literal out of range".to_owned())?;
    Ok((Token::Int(value), len))
}

/// A string literal at the start of `s` (optionally raw, optionally triple-quoted).
fn string(s: &str) -> Result<(String, usize), String> {
    let raw = s.starts_with(['r', 'R']);
    let start = usize::from(raw);
    let quote = &s[start..start + 1];
    let triple = quote.repeat(3);
    let delimiter = if s[start..].starts_with(&triple) { triple.as_str() } else { quote };
    let body_start = start + delimiter.len();
    let mut out = String::new();
    let mut chars = s[body_start..].char_indices();
    while let Some((offset, c)) = chars.next() {
        if s[body_start + offset..].starts_with(delimiter) {
            return Ok((out, body_start + offset + delimiter.len()));
        }
        if c == '\\' && !raw {
            let (_, escaped) = chars.next().ok_or("unterminated escape")?;
            match escaped {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '\\' | '"' | '\'' | '`' | '?' => out.push(escaped),
                'x' | 'u' | 'U' => {
                    let width = match escaped {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let digits: String = chars.by_ref().take(width).map(|(_, d)| d).collect();
                    let code = u32::from_str_radix(&digits, 16).map_err(|_| "bad hex escape")?;
                    out.push(char::from_u32(code).ok_or("escape is not a character")?);
                }
                other => return Err(format!("unsupported escape \\{other}")),
            }
        } else if c == '\n' && delimiter.len() == 1 {
            return Err("newline in string literal".into());
        } else {
            out.push(c);
        }
    }
    Err("unterminated string literal".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Token> {
        tokenize(source).expect("lexes").into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn lexes_numbers_strings_and_operators() {
        assert_eq!(
            kinds("0 < self && self <= 65535u"),
            [
                Token::Int(0),
                Token::Punct("<"),
                Token::Ident("self".into()),
                Token::Punct("&&"),
                Token::Ident("self".into()),
                Token::Punct("<="),
                Token::Uint(65535),
                Token::End
            ]
        );
        assert_eq!(kinds("1.5e3")[0], Token::Double(1500.0));
        assert_eq!(
            kinds(r#"'1ms' "a\"b" r'\d' '''x'y'''"#)[..4],
            [
                Token::Str("1ms".into()),
                Token::Str("a\"b".into()),
                Token::Str("\\d".into()),
                Token::Str("x'y".into()),
            ]
        );
    }

    #[test]
    fn rejects_what_the_subset_lacks() {
        assert!(tokenize("a * b").expect_err("fails").contains("unexpected character '*'"));
        assert!(tokenize("'open").expect_err("fails").contains("unterminated"));
        assert!(tokenize("99999999999999999999").is_err());
    }
}
