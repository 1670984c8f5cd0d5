//! The subset of CEL that Istio's CRD rules (`x-kubernetes-validations`) are written in,
//! with the Kubernetes extension functions they call.
//!
//! A rule is compiled once into a [`Program`] ([`parse`] checks names, arities and
//! `matches` patterns), then evaluated against JSON values by [`eval`] with `self` bound to
//! the value under the rule. The subset: literals (numbers, strings, lists, maps), `has()`,
//! `?:`, `&&`/`||`/`!`, `==`/`!=`/`<`/`<=`/`>`/`>=`, `in`, `+`, `size`, `contains`,
//! `startsWith`, `endsWith`, `matches`, `substring`, `int`, `duration`, `url(..).getScheme()`,
//! `isURL`, and the `all`/`exists`/`exists_one` macros. Written by hand rather than pulled
//! in as a general CEL crate: the rule set is small and fixed, and errors must read like
//! cel-go's so messages match the API server's.

mod eval;
mod golang;
mod lex;
mod parse;

use regex::Regex;
use serde_json::Value;

/// A compiled CEL expression.
#[derive(Debug)]
pub(crate) struct Program {
    expr: Expr,
}

impl Program {
    /// Parses and checks `source`; the error says what is wrong and where.
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        parse::parse(source).map(|expr| Self { expr })
    }

    /// Evaluates the rule with `self` bound to `value`: `Ok(true)` when it holds, `Ok(false)`
    /// when it does not, `Err` with cel-go's wording when evaluation fails.
    pub(crate) fn evaluate(&self, value: &Value) -> Result<bool, String> {
        eval::evaluate(&self.expr, value)
    }
}

/// A parsed, name-checked expression.
#[derive(Debug)]
enum Expr {
    Const(Const),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    /// `self` or a macro variable.
    Ident(String),
    /// `operand.field`; `test_only` for `has(operand.field)`.
    Select {
        operand: Box<Expr>,
        field: String,
        test_only: bool,
    },
    Not(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// A function call; for methods the receiver is the first argument.
    Call(Function, Vec<Expr>),
    /// `range.all(var, body)` and its siblings.
    Comprehension {
        kind: Quantifier,
        range: Box<Expr>,
        var: String,
        body: Box<Expr>,
    },
}

#[derive(Debug)]
enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quantifier {
    All,
    Exists,
    ExistsOne,
}

/// The functions the rules call, resolved at compile time.
#[derive(Debug)]
enum Function {
    Size,
    Contains,
    StartsWith,
    EndsWith,
    /// `matches` with its pattern compiled once.
    Matches(Box<Regex>),
    Substring,
    Int,
    Duration,
    Url,
    IsUrl,
    GetScheme,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(rule: &str, value: Value) -> Result<bool, String> {
        Program::compile(rule).unwrap_or_else(|e| panic!("{rule}: {e}")).evaluate(&value)
    }

    #[test]
    fn has_and_ternaries() {
        let rule = "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1";
        assert_eq!(eval(rule, json!({})), Ok(true));
        assert_eq!(eval(rule, json!({"selector": {}})), Ok(true));
        assert_eq!(eval(rule, json!({"selector": {}, "targetRefs": []})), Ok(false));
        let nested = "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true";
        assert_eq!(eval(nested, json!({"portLevelMtls": {}})), Ok(false));
        assert_eq!(
            eval(nested, json!({"portLevelMtls": {}, "selector": {"matchLabels": {"a": "b"}}})),
            Ok(true)
        );
        assert_eq!(eval(nested, json!({})), Ok(true));
    }

    #[test]
    fn logic_comparisons_and_membership() {
        assert_eq!(eval("0 < self && self <= 65535", json!(80)), Ok(true));
        assert_eq!(eval("0 < self && self <= 65535", json!(0)), Ok(false));
        assert_eq!(eval("has(self.wasm) != has(self.lua)", json!({"wasm": {}})), Ok(true));
        assert_eq!(eval("has(self.address) || has(self.network)", json!({})), Ok(false));
        assert_eq!(eval(r#"self in ["", "HTTP", "HTTPS"]"#, json!("HTTP")), Ok(true));
        assert_eq!(eval(r#"self in ["", "HTTP", "HTTPS"]"#, json!("TCP")), Ok(false));
        assert_eq!(eval(r#"self != "*""#, json!("*")), Ok(false));
        let se = r#"!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && !((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))"#;
        assert_eq!(eval(se, json!({"addresses": ["10.0.0.0/8"], "resolution": "DNS"})), Ok(false));
        assert_eq!(eval(se, json!({"addresses": ["10.0.0.0/8"]})), Ok(true));
        let upsert =
            r#"((has(self.operation) ? self.operation : "") == "UPSERT") ? (self.value != "") : true"#;
        assert_eq!(eval(upsert, json!({"operation": "UPSERT", "value": ""})), Ok(false));
        assert_eq!(eval(upsert, json!({"operation": "UPSERT"})), Err("no such key: value".into()));
    }

    #[test]
    fn strings_and_sizes() {
        assert_eq!(eval(r#"!self.contains("*")"#, json!("bar*")), Ok(false));
        assert_eq!(eval("self.size() == 0", json!("")), Ok(true));
        assert_eq!(eval("self.all(key, key.size() != 0)", json!({"": "x"})), Ok(false));
        let port_name =
            r#"self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))"#;
        assert_eq!(eval(port_name, json!({"http": 80})), Ok(true));
        assert_eq!(eval(port_name, json!({"@": 80})), Ok(false));
        let uds = r#"self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true"#;
        assert_eq!(eval(uds, json!("unix:///a")), Ok(true));
        assert_eq!(eval(uds, json!("unix://relative")), Ok(false));
        assert_eq!(eval(uds, json!("unix://")), Err("index out of range: 8".into()));
        assert_eq!(
            eval(r#"self.startsWith("unix://") ? !self.endsWith("/") : true"#, json!("unix:///d/")),
            Ok(false)
        );
    }

    #[test]
    fn macros() {
        let unique = "self.all(l1, self.exists_one(l2, l1.number == l2.number))";
        assert_eq!(eval(unique, json!([{"number": 80}, {"number": 81}])), Ok(true));
        assert_eq!(eval(unique, json!([{"number": 80}, {"number": 80}])), Ok(false));
        assert_eq!(eval(r#"self.all(key, !key.contains("*"))"#, json!({"a*": "b"})), Ok(false));
        // `all` is false if any element is false, even when another one errors.
        assert_eq!(eval("self.all(x, x.a == 1)", json!([{}, {"a": 2}])), Ok(false));
        assert_eq!(eval("self.all(x, x.a == 1)", json!([{}, {"a": 1}])), Err("no such key: a".into()));
    }

    #[test]
    fn conversions() {
        let ports = "self.all(key, 0 < int(key) && int(key) <= 65535)";
        assert_eq!(eval(ports, json!({"80": {}})), Ok(true));
        assert_eq!(eval(ports, json!({"0": {}})), Ok(false));
        assert_eq!(
            eval(ports, json!({"acd": {}})),
            Err("type conversion error from 'string' to 'int'".into())
        );
        let duration = "duration(self) >= duration('1ms')";
        assert_eq!(eval(duration, json!("1.5s")), Ok(true));
        assert_eq!(eval(duration, json!("100us")), Ok(false));
        assert_eq!(
            eval(duration, json!("1x")),
            Err("type conversion error from 'string' to 'google.protobuf.Duration'".into())
        );
    }

    #[test]
    fn urls() {
        let scheme = r#"url(self).getScheme() in ["http", "https"]"#;
        assert_eq!(eval(scheme, json!("https://example.com/jwks")), Ok(true));
        assert_eq!(eval(scheme, json!("ftp://example.com")), Ok(false));
        assert_eq!(
            eval(scheme, json!("example.com")),
            Err(r#"URL parse error during conversion from string: parse "example.com": invalid URI for request"#.into())
        );
        let wasm = r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])"#;
        assert_eq!(eval(wasm, json!("oci://ghcr.io/x:1")), Ok(true));
        assert_eq!(eval(wasm, json!("test")), Ok(true));
        assert_eq!(eval(wasm, json!("fake://example.com")), Ok(false));
        assert_eq!(eval(wasm, json!("#%blah$#@")), Ok(false));
    }

    #[test]
    fn compile_errors_are_reported() {
        assert!(
            Program::compile("self.frobnicate()")
                .expect_err("fails")
                .contains("undeclared reference to 'frobnicate'")
        );
        assert!(
            Program::compile("other == 1").expect_err("fails").contains("undeclared reference to 'other'")
        );
        assert!(Program::compile("self.matches('[')").expect_err("fails").contains("bad pattern"));
        assert!(
            Program::compile("has(self)").expect_err("fails").contains("has() takes one field selection")
        );
        assert!(Program::compile("size(self, 1)").expect_err("fails").contains("no matching overload"));
    }

    #[test]
    fn non_bool_results_and_type_mismatches_are_errors() {
        assert!(eval("self", json!(1)).expect_err("fails").contains("no such overload"));
        assert!(eval("self < 'a'", json!(1)).expect_err("fails").contains("no such overload"));
        assert_eq!(eval("self == 'a'", json!(1)), Ok(false), "values of different types are unequal");
        assert_eq!(eval("self == 1.0", json!(1)), Ok(true), "numbers compare across int and double");
    }
}
