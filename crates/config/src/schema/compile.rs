//! From a CRD's `openAPIV3Schema` (as JSON) to a [`Schema`] tree ready to validate with:
//! patterns and CEL rules compiled, keywords typed, and anything the validator does not
//! implement reported as a problem instead of being ignored.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::cel::Program;

/// One node of a structural schema.
#[derive(Debug, Default)]
pub(super) struct Schema {
    pub(super) ty: Option<Type>,
    pub(super) nullable: bool,
    pub(super) format: Option<Format>,
    pub(super) properties: BTreeMap<String, Schema>,
    pub(super) required: Vec<String>,
    /// `additionalProperties`: the schema of every value of a map.
    pub(super) additional: Option<Box<Schema>>,
    pub(super) items: Option<Box<Schema>>,
    /// `x-kubernetes-preserve-unknown-fields`: fields outside `properties` are kept.
    pub(super) preserve_unknown: bool,
    pub(super) enumeration: Vec<Value>,
    pub(super) pattern: Option<Pattern>,
    pub(super) minimum: Option<Bound>,
    pub(super) maximum: Option<Bound>,
    pub(super) min_length: Option<u64>,
    pub(super) max_length: Option<u64>,
    pub(super) min_items: Option<u64>,
    pub(super) max_items: Option<u64>,
    pub(super) min_properties: Option<u64>,
    pub(super) max_properties: Option<u64>,
    pub(super) list: ListType,
    pub(super) one_of: Vec<Schema>,
    pub(super) any_of: Vec<Schema>,
    pub(super) all_of: Vec<Schema>,
    pub(super) not: Option<Box<Schema>>,
    pub(super) rules: Vec<Rule>,
    /// Whether this node or any node below it has CEL rules (the CEL pass skips the rest).
    pub(super) has_rules: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    pub(super) fn name(self) -> &'static str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
        }
    }

    /// Whether a non-null `value` has this type (a float with no fraction is an integer).
    pub(super) fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (Type::Object, Value::Object(_))
            | (Type::Array, Value::Array(_))
            | (Type::String, Value::String(_))
            | (Type::Boolean, Value::Bool(_))
            | (Type::Number, Value::Number(_)) => true,
            (Type::Integer, Value::Number(n)) => !n.is_f64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        }
    }
}

/// String formats the API server checks; numeric formats (`int32`, `double`) are not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    DateTime,
    Byte,
}

#[derive(Debug)]
pub(super) struct Pattern {
    pub(super) source: String,
    pub(super) regex: Regex,
}

/// `minimum`/`maximum` with its `exclusive*` flag.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    pub(super) value: f64,
    pub(super) exclusive: bool,
}

/// `x-kubernetes-list-type`: how items of an array must differ.
#[derive(Debug, Default)]
pub(super) enum ListType {
    #[default]
    Atomic,
    /// Every item unique.
    Set,
    /// Items unique by these keys.
    Map(Vec<String>),
}

/// One `x-kubernetes-validations` entry.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) source: String,
    pub(super) message: Option<String>,
    /// The compiled rule, or why it failed to compile (such a rule is never evaluated).
    pub(super) program: Result<Program, String>,
}

impl Rule {
    /// What the API server says when the rule evaluates to false.
    pub(super) fn failure(&self) -> String {
        match &self.message {
            Some(message) => message.clone(),
            None => format!("failed rule: {}", self.source.trim()),
        }
    }

    /// How the API server names the rule in evaluation errors.
    pub(super) fn name(&self) -> &str {
        self.message.as_deref().unwrap_or(self.source.trim())
    }
}

/// Keywords the validator does not need: documentation, and `format`s it does not check.
const IGNORED: &[&str] = &["description", "title", "example", "externalDocs", "x-kubernetes-map-type"];

/// Compiles schemas, collecting what cannot be compiled.
#[derive(Debug, Default)]
pub(super) struct Compiler {
    pub(super) problems: Vec<String>,
    pub(super) rules_total: usize,
    pub(super) rules_compiled: usize,
}

impl Compiler {
    /// Compiles the schema at `value`; `at` names it in problem reports.
    pub(super) fn schema(&mut self, value: &Value, at: &str) -> Schema {
        let Value::Object(map) = value else {
            self.problems.push(format!("{at}: a schema must be an object"));
            return Schema::default();
        };
        let mut schema = Schema::default();
        for (key, v) in map {
            if let Err(problem) = self.keyword(&mut schema, key, v, map, at) {
                self.problems.push(format!("{at}: {key}: {problem}"));
            }
        }
        schema.has_rules = !schema.rules.is_empty()
            || schema.properties.values().any(|s| s.has_rules)
            || schema.additional.as_ref().is_some_and(|s| s.has_rules)
            || schema.items.as_ref().is_some_and(|s| s.has_rules);
        schema
    }

    fn keyword(
        &mut self,
        schema: &mut Schema,
        key: &str,
        v: &Value,
        map: &Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        match key {
            "type" => schema.ty = Some(ty(v)?),
            "nullable" => schema.nullable = flag(v)?,
            "format" => schema.format = format(v)?,
            "properties" => {
                let Value::Object(props) = v else { return Err("must be an object".into()) };
                for (name, s) in props {
                    schema.properties.insert(name.clone(), self.schema(s, &format!("{at}.{name}")));
                }
            }
            "required" => schema.required = strings(v)?,
            "additionalProperties" => {
                schema.additional = Some(Box::new(match v {
                    Value::Bool(true) => Schema { preserve_unknown: true, ..Schema::default() },
                    Value::Bool(false) => return Ok(()),
                    _ => self.schema(v, &format!("{at}.additionalProperties")),
                }));
            }
            "items" => schema.items = Some(Box::new(self.schema(v, &format!("{at}[*]")))),
            "x-kubernetes-preserve-unknown-fields" => schema.preserve_unknown = flag(v)?,
            "x-kubernetes-int-or-string" => {
                flag(v)?;
            }
            "enum" => schema.enumeration = v.as_array().cloned().ok_or("must be a list")?,
            "pattern" => {
                let source = v.as_str().ok_or("must be a string")?.to_owned();
                let regex = Regex::new(&source).map_err(|e| e.to_string())?;
                schema.pattern = Some(Pattern { source, regex });
            }
            "minimum" | "maximum" => {
                let value = v.as_f64().ok_or("must be a number")?;
                let flag_key = if key == "minimum" { "exclusiveMinimum" } else { "exclusiveMaximum" };
                let exclusive = map.get(flag_key).map(flag).transpose()?.unwrap_or(false);
                let bound = Some(Bound { value, exclusive });
                if key == "minimum" { schema.minimum = bound } else { schema.maximum = bound }
            }
            "exclusiveMinimum" | "exclusiveMaximum" => {
                flag(v)?;
            }
            "minLength" => schema.min_length = Some(count(v)?),
            "maxLength" => schema.max_length = Some(count(v)?),
            "minItems" => schema.min_items = Some(count(v)?),
            "maxItems" => schema.max_items = Some(count(v)?),
            "minProperties" => schema.min_properties = Some(count(v)?),
            "maxProperties" => schema.max_properties = Some(count(v)?),
            "x-kubernetes-list-type" => {
                schema.list = match v.as_str() {
                    Some("atomic") => ListType::Atomic,
                    Some("set") => ListType::Set,
                    Some("map") => ListType::Map(
                        map.get("x-kubernetes-list-map-keys").map(strings).transpose()?.unwrap_or_default(),
                    ),
                    _ => return Err(format!("unknown list type {v}")),
                }
            }
            "x-kubernetes-list-map-keys" => {
                strings(v)?;
            }
            "oneOf" | "anyOf" | "allOf" => {
                let Value::Array(alternatives) = v else { return Err("must be a list".into()) };
                let compiled = alternatives
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.schema(s, &format!("{at}.{key}[{i}]")))
                    .collect();
                match key {
                    "oneOf" => schema.one_of = compiled,
                    "anyOf" => schema.any_of = compiled,
                    _ => schema.all_of = compiled,
                }
            }
            "not" => schema.not = Some(Box::new(self.schema(v, &format!("{at}.not")))),
            "x-kubernetes-validations" => {
                let Value::Array(rules) = v else { return Err("must be a list".into()) };
                for rule in rules {
                    schema.rules.push(self.rule(rule, at)?);
                }
            }
            _ if IGNORED.contains(&key) => {}
            _ => return Err("keyword not supported by paymesh's schema validator".into()),
        }
        Ok(())
    }

    fn rule(&mut self, rule: &Value, at: &str) -> Result<Rule, String> {
        let Value::Object(fields) = rule else { return Err("a rule must be an object".into()) };
        if let Some(other) = fields.keys().find(|k| !matches!(k.as_str(), "rule" | "message")) {
            return Err(format!("rule field {other:?} not supported"));
        }
        let source = fields.get("rule").and_then(Value::as_str).ok_or("a rule needs `rule`")?.to_owned();
        let message = fields
            .get("message")
            .and_then(Value::as_str)
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty());
        self.rules_total += 1;
        let program = Program::compile(&source);
        match &program {
            Ok(_) => self.rules_compiled += 1,
            Err(e) => self.problems.push(format!("{at}: rule {source:?} does not compile: {e}")),
        }
        Ok(Rule { source, message, program })
    }
}

fn ty(v: &Value) -> Result<Type, String> {
    Ok(match v.as_str() {
        Some("object") => Type::Object,
        Some("array") => Type::Array,
        Some("string") => Type::String,
        Some("integer") => Type::Integer,
        Some("number") => Type::Number,
        Some("boolean") => Type::Boolean,
        _ => return Err(format!("unknown type {v}")),
    })
}

fn format(v: &Value) -> Result<Option<Format>, String> {
    match v.as_str() {
        Some("date-time") => Ok(Some(Format::DateTime)),
        Some("byte") => Ok(Some(Format::Byte)),
        Some("int32" | "int64" | "float" | "double") => Ok(None),
        _ => Err(format!("format {v} not supported")),
    }
}

fn flag(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| "must be true or false".into())
}

fn count(v: &Value) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| "must be a non-negative integer".into())
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    v.as_array()
        .and_then(|items| items.iter().map(|s| s.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| "must be a list of strings".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unsupported_keywords_and_bad_rules_are_problems() {
        let mut compiler = Compiler::default();
        let schema = compiler.schema(
            &json!({
                "type": "object",
                "uniqueItems": true,
                "x-kubernetes-validations": [{"rule": "self.nope()", "message": "m"}, {"rule": "has(self.a)"}],
            }),
            "root",
        );
        assert_eq!(compiler.rules_total, 2);
        assert_eq!(compiler.rules_compiled, 1);
        assert_eq!(compiler.problems.len(), 2, "{:?}", compiler.problems);
        assert!(compiler.problems[0].contains("uniqueItems"), "{:?}", compiler.problems);
        assert!(compiler.problems[1].contains("does not compile"), "{:?}", compiler.problems);
        assert!(schema.has_rules);
        assert_eq!(schema.rules[1].failure(), "failed rule: has(self.a)");
    }
}
