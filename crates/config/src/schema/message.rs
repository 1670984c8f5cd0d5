//! The API server's wording: `field.Error` bodies (`Required value`, `Invalid value: ...`,
//! `Unsupported value: ...`, `Too long`, `Too many`, `Duplicate value`) and kube-openapi's
//! "<path> in body ..." details, with values printed the way Go's `fmt` prints them, so
//! messages can be compared with the API server's verbatim.

use serde_json::Value;

use crate::path::FieldPath;
use crate::resource::FieldError;

/// Go's `strconv.Quote`: double quotes, backslash escapes for quotes and control characters.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%v` for a float64: shortest digits, exponent form below 1e-4 and from 1e6 up.
pub(crate) fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return match f {
            f if f.is_nan() => "NaN".into(),
            f if f == f64::INFINITY => "+Inf".into(),
            f if f == f64::NEG_INFINITY => "-Inf".into(),
            _ => "0".into(),
        };
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exponent)) = sci.split_once('e') else {
        return sci;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        return format!("{f}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// How `field.Error` prints a bad value: strings quoted, numbers and bools bare.
pub(super) fn bad_value(value: &Value) -> String {
    match value {
        Value::Null => "\"null\"".into(),
        Value::String(s) => go_quote(s),
        Value::Number(n) if n.is_f64() => go_float(n.as_f64().unwrap_or(f64::NAN)),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// kube-openapi's name for the JSON type of `value`.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `<path>: Required value`.
pub(super) fn required(path: FieldPath) -> FieldError {
    FieldError::new(path, "Required value")
}

/// `<path>: Invalid value: <value>: <detail>`, the value already printed.
pub(super) fn invalid(path: FieldPath, value: &str, detail: &str) -> FieldError {
    FieldError::new(path, format!("Invalid value: {value}: {detail}"))
}

/// kube-openapi's `<path> in body <what>` detail, behind `Invalid value: <value>:`.
pub(super) fn in_body(path: FieldPath, value: &str, what: &str) -> FieldError {
    let detail = format!("{path} in body {what}");
    invalid(path, value, &detail)
}

/// `<path>: Invalid value: "<actual>": <path> in body must be of type <expected>: "<actual>"`.
pub(super) fn wrong_type(path: FieldPath, expected: &str, actual: &str) -> FieldError {
    let quoted = go_quote(actual);
    in_body(path, &quoted, &format!("must be of type {expected}: {quoted}"))
}

/// `<path>: Unsupported value: <value>: supported values: "A", "B"`.
pub(super) fn not_supported(path: FieldPath, value: &Value, allowed: &[Value]) -> FieldError {
    let allowed: Vec<String> = allowed
        .iter()
        .map(|v| match v {
            Value::String(s) => go_quote(s),
            other => go_quote(&other.to_string()),
        })
        .collect();
    FieldError::new(
        path,
        format!("Unsupported value: {}: supported values: {}", bad_value(value), allowed.join(", ")),
    )
}

/// `<path>: Too long: may not be more than <max> bytes` (the API server's wording, though
/// the length checked is in characters).
pub(super) fn too_long(path: FieldPath, max: u64) -> FieldError {
    let unit = if max == 1 { "byte" } else { "bytes" };
    FieldError::new(path, format!("Too long: may not be more than {max} {unit}"))
}

/// `<path>: Too many: <actual>: must have at most <max> items`.
pub(super) fn too_many(path: FieldPath, actual: usize, max: u64) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    FieldError::new(path, format!("Too many: {actual}: must have at most {max} {unit}"))
}

/// `<path>: Duplicate value: <value>`.
pub(super) fn duplicate(path: FieldPath, value: &Value) -> FieldError {
    FieldError::new(path, format!("Duplicate value: {}", bad_value(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(go_float(65535.0), "65535");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(4294967295.0), "4.294967295e+09");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(-2.5), "-2.5");
        assert_eq!(go_float(0.0), "0");
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
    }

    #[test]
    fn field_errors_print_like_the_api_server() {
        let path = FieldPath::parse("spec.mtls.mode");
        let allowed = [Value::from("UNSET"), Value::from("STRICT")];
        assert_eq!(
            not_supported(path.clone(), &Value::from("BLAH"), &allowed).to_string(),
            r#"spec.mtls.mode: Unsupported value: "BLAH": supported values: "UNSET", "STRICT""#
        );
        assert_eq!(
            wrong_type(FieldPath::parse("spec"), "object", "null").to_string(),
            r#"spec: Invalid value: "null": spec in body must be of type object: "null""#
        );
        assert_eq!(required(path).to_string(), "spec.mtls.mode: Required value");
    }
}
