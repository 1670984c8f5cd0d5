//! Validating a document against a compiled [`Schema`], in the API server's order: the
//! OpenAPI checks (types, required, enums, bounds, patterns, formats, junctors), list-type
//! uniqueness and unknown fields in one walk; then, unless that walk found a *blocking*
//! error (wrong type, missing required field, unsupported enum value, too long, too many),
//! the CEL rules in a second walk that visits only subtrees holding rules.
//!
//! Paths are built lazily ([`Path`] lives on the stack), so a clean document allocates
//! nothing for them.

use serde_json::{Map, Number, Value};

use super::compile::{Bound, Format, ListType, Schema, Type};
use super::message::{self, bad_value, go_float, go_quote, type_name};
use crate::path::FieldPath;
use crate::resource::FieldError;

/// What the API server adds when CEL rules were skipped because of blocking errors.
const RULES_SKIPPED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// Every error in `doc` against `root`, in the API server's wording.
pub(super) fn validate(root: &Schema, doc: &Value) -> Vec<FieldError> {
    let mut walk = Walk::default();
    walk.check(doc, root, &Path::Root);
    if root.has_rules {
        if walk.blocking {
            walk.errors.push(FieldError::new(FieldPath::root(), RULES_SKIPPED));
        } else {
            rules(doc, root, &Path::Root, &mut walk.errors);
        }
    }
    walk.errors
}

/// A field path on the stack, turned into a [`FieldPath`] only for errors.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    fn field(&self) -> FieldPath {
        match self {
            Path::Root => FieldPath::root(),
            Path::Key(parent, key) => parent.field().key(*key),
            Path::Index(parent, i) => parent.field().index(*i),
        }
    }
}

#[derive(Default)]
struct Walk {
    errors: Vec<FieldError>,
    /// Whether an error that stops CEL evaluation was found.
    blocking: bool,
}

impl Walk {
    fn block(&mut self, error: FieldError) {
        self.blocking = true;
        self.errors.push(error);
    }

    /// Validates `value` against `schema` in isolation (for junctor alternatives).
    fn alone(value: &Value, schema: &Schema, path: &Path<'_>) -> Walk {
        let mut walk = Walk::default();
        walk.check(value, schema, path);
        walk
    }

    fn merge(&mut self, other: Walk) {
        self.blocking |= other.blocking;
        self.errors.extend(other.errors);
    }

    fn check(&mut self, value: &Value, schema: &Schema, path: &Path<'_>) {
        if value.is_null() {
            if let Some(ty) = schema.ty.filter(|_| !schema.nullable) {
                self.block(message::wrong_type(path.field(), ty.name(), "null"));
            }
            return;
        }
        if let Some(ty) = schema.ty.filter(|ty| !ty.accepts(value)) {
            return self.block(message::wrong_type(path.field(), ty.name(), type_name(value)));
        }
        self.junctors(value, schema, path);
        if !schema.enumeration.is_empty() && !schema.enumeration.contains(value) {
            self.block(message::not_supported(path.field(), value, &schema.enumeration));
        }
        match value {
            Value::String(s) => self.string(s, schema, path),
            Value::Number(n) => self.number(n, schema, path),
            Value::Array(items) => self.array(items, schema, path),
            Value::Object(map) => self.object(map, schema, path),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn junctors(&mut self, value: &Value, schema: &Schema, path: &Path<'_>) {
        let composite = |what: String| message::invalid(path.field(), "\"\"", &what);
        let name = || go_quote(&path.field().to_string());
        if !schema.any_of.is_empty() {
            let mut failures = schema.any_of.iter().map(|s| Walk::alone(value, s, path));
            let first = failures.next();
            if let Some(first) = first.filter(|w| !w.errors.is_empty()) {
                if !failures.any(|w| w.errors.is_empty()) {
                    self.errors
                        .push(composite(format!("{} must validate at least one schema (anyOf)", name())));
                    self.merge(first);
                }
            }
        }
        if !schema.one_of.is_empty() {
            let results: Vec<Walk> = schema.one_of.iter().map(|s| Walk::alone(value, s, path)).collect();
            let valid = results.iter().filter(|w| w.errors.is_empty()).count();
            if valid != 1 {
                let found = if valid == 0 {
                    "Found none valid".to_owned()
                } else {
                    format!("Found {valid} valid alternatives")
                };
                self.errors.push(composite(format!(
                    "{} must validate one and only one schema (oneOf). {found}",
                    name()
                )));
                if valid == 0
                    && let Some(first) = results.into_iter().next()
                {
                    self.merge(first);
                }
            }
        }
        if !schema.all_of.is_empty() {
            let mut valid = 0;
            for alternative in &schema.all_of {
                let walk = Walk::alone(value, alternative, path);
                valid += usize::from(walk.errors.is_empty());
                self.merge(walk);
            }
            if valid != schema.all_of.len() {
                let none = if valid == 0 { ". None validated" } else { "" };
                self.errors
                    .push(composite(format!("{} must validate all the schemas (allOf){none}", name())));
            }
        }
        if let Some(not) = &schema.not
            && Walk::alone(value, not, path).errors.is_empty()
        {
            self.errors.push(composite(format!("{} must not validate the schema (not)", name())));
        }
    }

    fn string(&mut self, s: &str, schema: &Schema, path: &Path<'_>) {
        let length = || s.chars().count() as u64;
        let quoted = || go_quote(s);
        if let Some(max) = schema.max_length.filter(|max| length() > *max) {
            self.block(message::too_long(path.field(), max));
        }
        if let Some(min) = schema.min_length.filter(|min| length() < *min) {
            self.errors.push(message::in_body(
                path.field(),
                &quoted(),
                &format!("should be at least {min} chars long"),
            ));
        }
        if let Some(pattern) = schema.pattern.as_ref().filter(|p| !p.regex.is_match(s)) {
            let what = format!("should match '{}'", pattern.source);
            self.errors.push(message::in_body(path.field(), &quoted(), &what));
        }
        let format_ok = match schema.format {
            None => true,
            Some(Format::DateTime) => is_date_time(s),
            Some(Format::Byte) => is_base64(s),
        };
        if !format_ok {
            let name = if schema.format == Some(Format::Byte) { "byte" } else { "date-time" };
            self.block(message::in_body(
                path.field(),
                &quoted(),
                &format!("must be of type {name}: {}", quoted()),
            ));
        }
    }

    fn number(&mut self, n: &Number, schema: &Schema, path: &Path<'_>) {
        let checks = [(schema.minimum, "greater than", true), (schema.maximum, "less than", false)];
        for (bound, words, is_min) in checks {
            let Some(Bound { value: limit, exclusive }) = bound else { continue };
            let (beyond, shown) = match n.as_i64() {
                Some(i) => (compare_int(i, limit as i64, is_min, exclusive), (limit as i64).to_string()),
                None => {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    let beyond = if is_min {
                        f < limit || (exclusive && f == limit)
                    } else {
                        f > limit || (exclusive && f == limit)
                    };
                    (beyond, go_float(limit))
                }
            };
            if beyond {
                let or_equal = if exclusive { "" } else { " or equal to" };
                let what = format!("should be {words}{or_equal} {shown}");
                self.errors.push(message::in_body(
                    path.field(),
                    &bad_value(&Value::Number(n.clone())),
                    &what,
                ));
            }
        }
    }

    fn array(&mut self, items: &[Value], schema: &Schema, path: &Path<'_>) {
        if let Some(min) = schema.min_items.filter(|min| (items.len() as u64) < *min) {
            let what = format!("should have at least {min} items");
            self.errors.push(message::in_body(path.field(), &items.len().to_string(), &what));
        }
        if let Some(max) = schema.max_items.filter(|max| items.len() as u64 > *max) {
            self.block(message::too_many(path.field(), items.len(), max));
        }
        match &schema.list {
            ListType::Atomic => {}
            ListType::Set => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        self.errors.push(message::duplicate(Path::Index(path, i).field(), item));
                    }
                }
            }
            ListType::Map(keys) => {
                let key_of = |item: &Value| -> Value {
                    Value::Object(
                        keys.iter().filter_map(|k| Some((k.clone(), item.get(k)?.clone()))).collect(),
                    )
                };
                let seen: Vec<Value> = items.iter().map(key_of).collect();
                for (i, key) in seen.iter().enumerate() {
                    if seen[..i].contains(key) {
                        self.errors.push(message::duplicate(Path::Index(path, i).field(), key));
                    }
                }
            }
        }
        if let Some(item_schema) = &schema.items {
            for (i, item) in items.iter().enumerate() {
                self.check(item, item_schema, &Path::Index(path, i));
            }
        }
    }

    fn object(&mut self, map: &Map<String, Value>, schema: &Schema, path: &Path<'_>) {
        for name in schema.required.iter().filter(|name| !map.contains_key(*name)) {
            self.block(message::required(Path::Key(path, name).field()));
        }
        if let Some(min) = schema.min_properties.filter(|min| (map.len() as u64) < *min) {
            let what = format!("should have at least {min} properties");
            self.errors.push(message::in_body(path.field(), &map.len().to_string(), &what));
        }
        if let Some(max) = schema.max_properties.filter(|max| map.len() as u64 > *max) {
            self.block(message::too_many(path.field(), map.len(), max));
        }
        let closed =
            schema.ty == Some(Type::Object) && !schema.preserve_unknown && schema.additional.is_none();
        for (key, value) in map {
            let at = Path::Key(path, key);
            match schema.properties.get(key).or(schema.additional.as_deref()) {
                Some(field_schema) => self.check(value, field_schema, &at),
                None if closed => {
                    let field = at.field();
                    let message = format!("unknown field {}", go_quote(&field.to_string()));
                    self.errors.push(FieldError::new(field, message));
                }
                None => {}
            }
        }
    }
}

fn compare_int(value: i64, limit: i64, is_min: bool, exclusive: bool) -> bool {
    match (is_min, exclusive) {
        (true, false) => value < limit,
        (true, true) => value <= limit,
        (false, false) => value > limit,
        (false, true) => value >= limit,
    }
}

/// The CEL pass: every rule on every value under a schema node that has rules.
fn rules(value: &Value, schema: &Schema, path: &Path<'_>, errors: &mut Vec<FieldError>) {
    if value.is_null() || !schema.has_rules {
        return;
    }
    let schema_type = go_quote(schema.ty.map_or("", Type::name));
    for rule in &schema.rules {
        let Ok(program) = &rule.program else { continue };
        match program.evaluate(value) {
            Ok(true) => {}
            Ok(false) => errors.push(message::invalid(path.field(), &schema_type, &rule.failure())),
            Err(e) if e.starts_with("no such overload") => {
                let detail = format!(
                    "'{e}': call arguments did not match a supported operator, function or macro signature for rule: {}",
                    rule.name()
                );
                errors.push(message::invalid(path.field(), &schema_type, &detail));
            }
            Err(e) => {
                errors.push(message::invalid(
                    path.field(),
                    &schema_type,
                    &format!("{e} evaluating rule: {}", rule.name()),
                ));
            }
        }
    }
    match value {
        Value::Object(map) => {
            for (key, field) in map {
                if let Some(field_schema) = schema.properties.get(key).or(schema.additional.as_deref()) {
                    rules(field, field_schema, &Path::Key(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    rules(item, item_schema, &Path::Index(path, i), errors);
                }
            }
        }
        _ => {}
    }
}

/// RFC 3339 date-time, as the API server's `date-time` format accepts it.
fn is_date_time(s: &str) -> bool {
    static DATE_TIME: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$")
            .ok()
    });
    DATE_TIME.as_ref().is_some_and(|re| re.is_match(s))
}

/// Standard base64 with padding, as Go's `base64.StdEncoding` decodes it.
fn is_base64(s: &str) -> bool {
    let s: Vec<u8> = s.bytes().filter(|b| *b != b'\r' && *b != b'\n').collect();
    let body = s.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    s.len() % 4 == 0
        && s.len() - body <= 2
        && s[..body].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}
