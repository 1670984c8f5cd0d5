//! CEL evaluation over JSON values, without copying them: `self` and macro variables
//! borrow from the document being validated; only literals and results are built.
//!
//! Semantics follow cel-go where the rules can tell: `&&`/`||` and the `all`/`exists`
//! macros are commutative on errors (a decisive `false`/`true` wins over an error on the
//! other side), values of different types are unequal, ints and doubles compare across
//! types, and error texts are cel-go's (`no such key: x`, `no such overload`, ...).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{BinaryOp, Const, Expr, Function, Quantifier, golang};

type Result<T> = std::result::Result<T, String>;

/// A CEL value; JSON-backed lists and maps borrow from the document.
#[derive(Clone, Debug)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(Cow<'a, str>),
    List(List<'a>),
    Map(Dict<'a>),
    /// Nanoseconds.
    Duration(i64),
    /// A parsed URL; the rules only ask for its scheme.
    Url(String),
}

#[derive(Clone, Debug)]
enum List<'a> {
    Json(&'a [Value]),
    Built(Vec<Val<'a>>),
}

#[derive(Clone, Debug)]
enum Dict<'a> {
    Json(&'a Map<String, Value>),
    Built(Vec<(Val<'a>, Val<'a>)>),
}

/// Evaluates `expr` with `self` bound to `value`; the result must be a bool.
pub(super) fn evaluate(expr: &Expr, value: &Value) -> Result<bool> {
    let mut scope = Scope { vars: vec![("self", Val::from_json(value))] };
    scope.eval(expr).and_then(as_bool)
}

fn no_overload() -> String {
    "no such overload".to_owned()
}

fn as_bool(value: Val<'_>) -> Result<bool> {
    match value {
        Val::Bool(b) => Ok(b),
        _ => Err(no_overload()),
    }
}

impl<'a> Val<'a> {
    fn from_json(value: &'a Value) -> Self {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map(Val::Int)
                .or_else(|| n.as_u64().map(Val::Uint))
                .unwrap_or_else(|| Val::Double(n.as_f64().unwrap_or(f64::NAN))),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(items) => Val::List(List::Json(items)),
            Value::Object(map) => Val::Map(Dict::Json(map)),
        }
    }
}

impl<'a> List<'a> {
    fn items(&self) -> Vec<Val<'a>> {
        match self {
            List::Json(items) => items.iter().map(Val::from_json).collect(),
            List::Built(items) => items.clone(),
        }
    }

    fn len(&self) -> usize {
        match self {
            List::Json(items) => items.len(),
            List::Built(items) => items.len(),
        }
    }

    fn contains(&self, needle: &Val<'_>) -> bool {
        match self {
            List::Json(items) => items.iter().any(|v| equals(needle, &Val::from_json(v))),
            List::Built(items) => items.iter().any(|v| equals(needle, v)),
        }
    }
}

impl<'a> Dict<'a> {
    fn keys(&self) -> Vec<Val<'a>> {
        match self {
            Dict::Json(map) => map.keys().map(|k| Val::Str(Cow::Borrowed(k.as_str()))).collect(),
            Dict::Built(entries) => entries.iter().map(|(k, _)| k.clone()).collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Dict::Json(map) => map.len(),
            Dict::Built(entries) => entries.len(),
        }
    }

    fn get(&self, key: &Val<'_>) -> Option<Val<'a>> {
        match (self, key) {
            (Dict::Json(map), Val::Str(k)) => map.get(k.as_ref()).map(Val::from_json),
            (Dict::Json(_), _) => None,
            (Dict::Built(entries), _) => entries.iter().find(|(k, _)| equals(k, key)).map(|(_, v)| v.clone()),
        }
    }
}

struct Scope<'a> {
    /// `self`, then the variables of the macros being evaluated, innermost last.
    vars: Vec<(&'a str, Val<'a>)>,
}

impl<'a> Scope<'a> {
    fn eval(&mut self, expr: &'a Expr) -> Result<Val<'a>> {
        match expr {
            Expr::Const(c) => Ok(match c {
                Const::Null => Val::Null,
                Const::Bool(b) => Val::Bool(*b),
                Const::Int(i) => Val::Int(*i),
                Const::Uint(u) => Val::Uint(*u),
                Const::Double(d) => Val::Double(*d),
                Const::Str(s) => Val::Str(Cow::Borrowed(s)),
            }),
            Expr::List(items) => {
                let items = items.iter().map(|e| self.eval(e)).collect::<Result<Vec<_>>>()?;
                Ok(Val::List(List::Built(items)))
            }
            Expr::Map(entries) => {
                let mut built = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    built.push((self.eval(k)?, self.eval(v)?));
                }
                Ok(Val::Map(Dict::Built(built)))
            }
            Expr::Ident(name) => self
                .vars
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("no such attribute: {name}")),
            Expr::Select { operand, field, test_only } => {
                let Val::Map(dict) = self.eval(operand)? else {
                    return Err(no_overload());
                };
                let found = dict.get(&Val::Str(Cow::Borrowed(field)));
                match (test_only, found) {
                    (true, found) => Ok(Val::Bool(found.is_some())),
                    (false, Some(v)) => Ok(v),
                    (false, None) => Err(format!("no such key: {field}")),
                }
            }
            Expr::Not(inner) => self.eval(inner).and_then(as_bool).map(|b| Val::Bool(!b)),
            Expr::And(left, right) => self.logic(left, right, false),
            Expr::Or(left, right) => self.logic(left, right, true),
            Expr::Cond(condition, then, otherwise) => {
                if as_bool(self.eval(condition)?)? {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
            Expr::Binary(op, left, right) => {
                let left = self.eval(left)?;
                binary(*op, left, self.eval(right)?)
            }
            Expr::Call(function, args) => {
                let args = args.iter().map(|a| self.eval(a)).collect::<Result<Vec<_>>>()?;
                call(function, args)
            }
            Expr::Comprehension { kind, range, var, body } => self.comprehension(*kind, range, var, body),
        }
    }

    /// `&&` (`decisive` = false) and `||` (`decisive` = true): the decisive value on either
    /// side wins over an error on the other.
    fn logic(&mut self, left: &'a Expr, right: &'a Expr, decisive: bool) -> Result<Val<'a>> {
        let left = self.eval(left).and_then(as_bool);
        if left == Ok(decisive) {
            return Ok(Val::Bool(decisive));
        }
        match (left, self.eval(right).and_then(as_bool)) {
            (_, Ok(b)) if b == decisive => Ok(Val::Bool(decisive)),
            (Err(e), _) | (_, Err(e)) => Err(e),
            _ => Ok(Val::Bool(!decisive)),
        }
    }

    fn comprehension(
        &mut self,
        kind: Quantifier,
        range: &'a Expr,
        var: &'a str,
        body: &'a Expr,
    ) -> Result<Val<'a>> {
        let items = match self.eval(range)? {
            Val::List(list) => list.items(),
            Val::Map(dict) => dict.keys(),
            _ => return Err(no_overload()),
        };
        let mut error = None;
        let mut matched = 0usize;
        for item in items {
            self.vars.push((var, item));
            let result = self.eval(body).and_then(as_bool);
            self.vars.pop();
            match (kind, result) {
                (Quantifier::All, Ok(false)) => return Ok(Val::Bool(false)),
                (Quantifier::Exists, Ok(true)) => return Ok(Val::Bool(true)),
                (Quantifier::ExistsOne, Ok(true)) => matched += 1,
                (Quantifier::ExistsOne, Err(e)) => return Err(e),
                (_, Err(e)) => {
                    error.get_or_insert(e);
                }
                _ => {}
            }
        }
        match (kind, error) {
            (Quantifier::ExistsOne, _) => Ok(Val::Bool(matched == 1)),
            (_, Some(e)) => Err(e),
            (kind, None) => Ok(Val::Bool(kind == Quantifier::All)),
        }
    }
}

fn binary<'a>(op: BinaryOp, left: Val<'a>, right: Val<'a>) -> Result<Val<'a>> {
    let ordered = |test: fn(Ordering) -> bool| {
        compare(&left, &right).map(|o| Val::Bool(test(o))).ok_or_else(no_overload)
    };
    match op {
        BinaryOp::Eq => Ok(Val::Bool(equals(&left, &right))),
        BinaryOp::Ne => Ok(Val::Bool(!equals(&left, &right))),
        BinaryOp::Lt => ordered(Ordering::is_lt),
        BinaryOp::Le => ordered(Ordering::is_le),
        BinaryOp::Gt => ordered(Ordering::is_gt),
        BinaryOp::Ge => ordered(Ordering::is_ge),
        BinaryOp::In => match &right {
            Val::List(list) => Ok(Val::Bool(list.contains(&left))),
            Val::Map(dict) => Ok(Val::Bool(dict.get(&left).is_some())),
            _ => Err(no_overload()),
        },
        BinaryOp::Add => add(left, right),
    }
}

fn add<'a>(left: Val<'a>, right: Val<'a>) -> Result<Val<'a>> {
    let overflow = || "integer overflow".to_owned();
    match (left, right) {
        (Val::Int(a), Val::Int(b)) => a.checked_add(b).map(Val::Int).ok_or_else(overflow),
        (Val::Uint(a), Val::Uint(b)) => a.checked_add(b).map(Val::Uint).ok_or_else(overflow),
        (Val::Double(a), Val::Double(b)) => Ok(Val::Double(a + b)),
        (Val::Duration(a), Val::Duration(b)) => a.checked_add(b).map(Val::Duration).ok_or_else(overflow),
        (Val::Str(a), Val::Str(b)) => Ok(Val::Str(Cow::Owned(format!("{a}{b}")))),
        (Val::List(a), Val::List(b)) => {
            let mut items = a.items();
            items.extend(b.items());
            Ok(Val::List(List::Built(items)))
        }
        _ => Err(no_overload()),
    }
}

/// A number for cross-type comparison.
enum Num {
    Int(i128),
    Double(f64),
}

fn number(value: &Val<'_>) -> Option<Num> {
    match value {
        Val::Int(i) => Some(Num::Int(i128::from(*i))),
        Val::Uint(u) => Some(Num::Int(i128::from(*u))),
        Val::Double(d) => Some(Num::Double(*d)),
        _ => None,
    }
}

fn compare(left: &Val<'_>, right: &Val<'_>) -> Option<Ordering> {
    match (left, right) {
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Duration(a), Val::Duration(b)) => Some(a.cmp(b)),
        _ => match (number(left)?, number(right)?) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Int(a), Num::Double(b)) => (a as f64).partial_cmp(&b),
            (Num::Double(a), Num::Int(b)) => a.partial_cmp(&(b as f64)),
            (Num::Double(a), Num::Double(b)) => a.partial_cmp(&b),
        },
    }
}

fn equals(left: &Val<'_>, right: &Val<'_>) -> bool {
    match (left, right) {
        (Val::Null, Val::Null) => true,
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Url(a), Val::Url(b)) => a == b,
        (Val::List(a), Val::List(b)) => {
            a.len() == b.len() && a.items().iter().zip(b.items().iter()).all(|(x, y)| equals(x, y))
        }
        (Val::Map(a), Val::Map(b)) => {
            a.len() == b.len()
                && a.keys().iter().all(|k| match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => equals(&x, &y),
                    _ => false,
                })
        }
        _ => compare(left, right) == Some(Ordering::Equal),
    }
}

fn call<'a>(function: &Function, args: Vec<Val<'a>>) -> Result<Val<'a>> {
    match (function, args.as_slice()) {
        (Function::Size, [Val::Str(s)]) => Ok(Val::Int(count(s.chars().count()))),
        (Function::Size, [Val::List(list)]) => Ok(Val::Int(count(list.len()))),
        (Function::Size, [Val::Map(dict)]) => Ok(Val::Int(count(dict.len()))),
        (Function::Contains, [Val::Str(s), Val::Str(part)]) => Ok(Val::Bool(s.contains(part.as_ref()))),
        (Function::StartsWith, [Val::Str(s), Val::Str(part)]) => Ok(Val::Bool(s.starts_with(part.as_ref()))),
        (Function::EndsWith, [Val::Str(s), Val::Str(part)]) => Ok(Val::Bool(s.ends_with(part.as_ref()))),
        (Function::Matches(regex), [Val::Str(s)]) => Ok(Val::Bool(regex.is_match(s))),
        (Function::Substring, [Val::Str(s), Val::Int(start), Val::Int(end)]) => substring(s, *start, *end),
        (Function::Int, [Val::Int(i)]) => Ok(Val::Int(*i)),
        (Function::Int, [Val::Uint(u)]) => {
            i64::try_from(*u).map(Val::Int).map_err(|_| "integer overflow".into())
        }
        (Function::Int, [Val::Double(d)]) if d.is_finite() && d.abs() < 9.2e18 => {
            Ok(Val::Int(d.trunc() as i64))
        }
        (Function::Int, [Val::Double(_)]) => Err("integer overflow".into()),
        (Function::Int, [Val::Str(s)]) => {
            s.parse().map(Val::Int).map_err(|_| "type conversion error from 'string' to 'int'".into())
        }
        (Function::Duration, [Val::Duration(d)]) => Ok(Val::Duration(*d)),
        (Function::Duration, [Val::Str(s)]) => golang::parse_duration(s)
            .map(Val::Duration)
            .ok_or_else(|| "type conversion error from 'string' to 'google.protobuf.Duration'".into()),
        (Function::Url, [Val::Str(s)]) => golang::parse_request_uri(s)
            .map(Val::Url)
            .map_err(|e| format!("URL parse error during conversion from string: {e}")),
        (Function::IsUrl, [Val::Str(s)]) => Ok(Val::Bool(golang::parse_request_uri(s).is_ok())),
        (Function::GetScheme, [Val::Url(scheme)]) => Ok(Val::Str(Cow::Owned(scheme.clone()))),
        _ => Err(no_overload()),
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `s.substring(start, end)` over code points, with cel-go's range errors.
fn substring<'a>(s: &str, start: i64, end: i64) -> Result<Val<'a>> {
    let len = count(s.chars().count());
    if start > end {
        return Err(format!("invalid substring range. start: {start}, end: {end}"));
    }
    if start < 0 || start > len {
        return Err(format!("index out of range: {start}"));
    }
    if end > len {
        return Err(format!("index out of range: {end}"));
    }
    let (start, end) = (start as usize, end as usize);
    Ok(Val::Str(Cow::Owned(s.chars().skip(start).take(end - start).collect())))
}
