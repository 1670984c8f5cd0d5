//! YAML documents with positions.
//!
//! A stream is split at `---` lines first, so a malformed document costs only itself and
//! its neighbours still load. Each document is parsed event by event (never recursively,
//! so 10,000-level nesting is an error, not a stack overflow) into a [`Node`] tree that
//! keeps the line of every value; [`Node::to_json`] gives the plain value that typed
//! deserialization and analyzers work on, and [`Node::line_of`] maps a [`FieldPath`] back
//! to its line for messages.
//!
//! One deliberate departure from YAML 1.2, to read what Kubernetes reads: go-yaml ends a
//! plain scalar at `:` only before a blank, so in flow context `[a, 001:db8::]` holds the
//! string `001:db8::` where YAML 1.2 sees a one-entry mapping (see [`go_yaml_flow_colons`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, Scanner, TScalarStyle, Token, TokenType};

use crate::path::{FieldPath, Segment};

/// Deepest nesting accepted; Istio resources stay far below it.
pub const MAX_DEPTH: usize = 128;
/// Most nodes one document may expand to (aliases included), against "billion laughs".
pub const MAX_NODES: usize = 1_000_000;

/// A YAML value and the line/column where it starts (1-based).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: u32,
    pub column: u32,
    pub value: NodeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Keys in document order; a repeated key is a parse error, as in Kubernetes.
    Map(Vec<Entry>),
}

/// A mapping entry; `line` is the key's line, where messages about the field point.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub line: u32,
    pub value: Node,
}

/// One document of a stream: its tree (None when empty) and the line it starts on.
#[derive(Debug)]
pub struct Document {
    pub first_line: u32,
    pub root: Option<Node>,
}

/// Why a document could not be parsed, with its position in the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Splits a YAML stream into documents and parses each one independently.
pub fn parse_stream(text: &str) -> Vec<Result<Document, SyntaxError>> {
    let text = unix_line_breaks(text);
    split_documents(&text)
        .into_iter()
        .filter(|(_, chunk)| !chunk.trim().is_empty())
        .map(|(offset, chunk)| {
            parse_document(chunk, offset)
                .or_else(|error| match indent_flow_closers(chunk) {
                    Some(lenient) => parse_document(&lenient, offset).map_err(|_| error),
                    None => Err(error),
                })
                .map(|root| Document { first_line: root.as_ref().map_or(offset + 1, |n| n.line), root })
        })
        .collect()
}

/// go-yaml (which Kubernetes uses) accepts a flow collection whose closing `]` or `}` sits on
/// its own line at the indentation of the key that opened it; YAML, and our parser, want it
/// indented further. For a document that failed to parse, this indents such lines by one
/// space (whitespace is insignificant inside a flow collection) so it can be tried again;
/// `None` when there is no such line. Lines and columns of everything else are unchanged.
fn indent_flow_closers(chunk: &str) -> Option<String> {
    let is_closer = |line: &str| {
        let bare = line.trim();
        !bare.is_empty() && bare.trim_end_matches(',').chars().all(|c| c == ']' || c == '}')
    };
    if !chunk.lines().any(is_closer) {
        return None;
    }
    let mut out = String::with_capacity(chunk.len() + 16);
    for line in chunk.split_inclusive('\n') {
        if is_closer(line) {
            out.push(' ');
        }
        out.push_str(line);
    }
    Some(out)
}

/// YAML breaks lines at CR, LF and CRLF alike and reads every break as LF; doing that first
/// makes the document splitter count lines the way the parser does.
fn unix_line_breaks(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Cuts at lines that are exactly `---` (optionally followed by a space and content) or `...`,
/// returning each chunk with the number of lines before it.
fn split_documents(text: &str) -> Vec<(u32, &str)> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u32;
    let mut pos = 0usize;
    for (line_no, line) in (0u32..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_separator = bare == "..."
            || bare == "---"
            || bare.strip_prefix("---").is_some_and(|rest| rest.starts_with([' ', '\t']));
        if is_separator {
            chunks.push((start_line, &text[start..pos]));
            // Content after `--- ` on the same line belongs to the next document.
            let after = if bare.starts_with("---") { 3 } else { bare.len() };
            start = pos + after;
            start_line = line_no;
        }
        pos += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
}

fn parse_document(chunk: &str, line_offset: u32) -> Result<Option<Node>, SyntaxError> {
    let last_line =
        line_offset.saturating_add(u32::try_from(chunk.lines().count().max(1)).unwrap_or(u32::MAX));
    let mut builder =
        Builder { line_offset, last_line, stack: Vec::new(), anchors: HashMap::new(), nodes: 0, root: None };
    let chunk = go_yaml_flow_colons(chunk);
    let mut parser = Parser::new_from_str(&chunk);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            line: builder.line(e.marker()),
            column: e.marker().col() as u32 + 1,
            message: e.info().to_owned(),
        })?;
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart if builder.root.is_some() => {
                return Err(builder.error(&mark, "more than one document between separators".into()));
            }
            event => builder.event(event, &mark)?,
        }
    }
    Ok(builder.root)
}

/// Rewrites `chunk` so yaml-rust2 reads flow-context plain scalars as go-yaml does.
///
/// YAML 1.2 ends a plain scalar in a flow collection at a `:` followed by `,`, `[`, `]`, `{`
/// or `}`, and reads that `:` as a value indicator; go-yaml (Kubernetes' reader) keeps the `:`
/// in the scalar. Each such scalar (`001:db8:` before `:]`) is double-quoted with its colon
/// (`"001:db8::"]`), so the parser sees go-yaml's string. Lines are unchanged; columns after a
/// rewritten scalar on its line shift by two. Scanning repeats (a bounded number of times)
/// while it finds more, since the first reading may stop at an error that a rewrite removes.
fn go_yaml_flow_colons(chunk: &str) -> Cow<'_, str> {
    const MAX_PASSES: usize = 16;
    let mut text = Cow::Borrowed(chunk);
    for _ in 0..MAX_PASSES {
        if !has_colon_before_flow_indicator(&text) {
            break;
        }
        let rewrites = flow_colon_scalars(&text);
        if rewrites.is_empty() {
            break;
        }
        text = Cow::Owned(quote_ranges(&text, &rewrites));
    }
    text
}

fn is_flow_indicator(c: char) -> bool {
    matches!(c, ',' | '[' | ']' | '{' | '}')
}

fn has_colon_before_flow_indicator(text: &str) -> bool {
    text.as_bytes().windows(2).any(|w| w[0] == b':' && is_flow_indicator(char::from(w[1])))
}

/// Byte ranges of plain scalars immediately followed by `:` and a flow indicator (the range
/// includes the colon), as yaml-rust2 tokenizes `text` up to its first error.
fn flow_colon_scalars(text: &str) -> Vec<(usize, usize)> {
    // Scanner marks count characters; map them to byte offsets (one past the end included).
    let offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
    let byte = |index: usize| offsets.get(index).copied();
    let mut ranges = Vec::new();
    let mut previous: Option<Token> = None;
    for token in Scanner::new(text.chars()) {
        if let (Some(Token(start, TokenType::Scalar(TScalarStyle::Plain, value))), TokenType::Value) =
            (&previous, &token.1)
        {
            let colon = token.0.index();
            let adjacent = start.index() + value.chars().count() == colon;
            let after =
                text.get(byte(colon + 1).unwrap_or(text.len())..).and_then(|rest| rest.chars().next());
            if let (true, Some(from), Some(to), Some(c)) =
                (adjacent, byte(start.index()), byte(colon + 1), after)
                && is_flow_indicator(c)
                && text.get(from..to).is_some_and(|s| s.ends_with(':'))
            {
                ranges.push((from, to));
            }
        }
        previous = Some(token);
    }
    ranges
}

/// `text` with each (ordered, disjoint) byte range replaced by its double-quoted form.
fn quote_ranges(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len() + 2 * ranges.len());
    let mut last = 0;
    for &(from, to) in ranges {
        out.push_str(&text[last..from]);
        out.push('"');
        for c in text[from..to].chars() {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        last = to;
    }
    out.push_str(&text[last..]);
    out
}

enum Open {
    Seq(Node, usize),
    /// A mapping, its anchor, the key waiting for its value, `<<` merges to apply at its end,
    /// and the keys seen so far (a set, so a 200,000-key mapping is not quadratic).
    Map {
        node: Node,
        anchor: usize,
        key: Option<(String, u32, u32)>,
        merges: Vec<Node>,
        keys: HashSet<String>,
    },
}

struct Builder {
    line_offset: u32,
    /// The document's last line: what the parser marks past it (the end of input after a
    /// final newline) is reported there.
    last_line: u32,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
}

impl Builder {
    /// The line of `mark` in the whole file.
    fn line(&self, mark: &Marker) -> u32 {
        let line = u32::try_from(mark.line()).unwrap_or(u32::MAX);
        self.line_offset.saturating_add(line).min(self.last_line)
    }

    fn error(&self, mark: &Marker, message: String) -> SyntaxError {
        SyntaxError { line: self.line(mark), column: mark.col() as u32 + 1, message }
    }

    fn node(&self, mark: &Marker, value: NodeValue) -> Node {
        Node { line: self.line(mark), column: mark.col() as u32 + 1, value }
    }

    fn event(&mut self, event: Event, mark: &Marker) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref().map(|t| t.suffix.as_str()));
                let node = self.node(mark, value);
                self.complete(node, anchor, mark)
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.error(mark, "alias to an unknown anchor".into()))?;
                let size = node.size();
                self.count(size, mark)?;
                self.complete(node, 0, mark)
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Open::Seq(self.node(mark, NodeValue::Seq(Vec::new())), anchor), mark)
            }
            Event::MappingStart(anchor, _) => {
                let node = self.node(mark, NodeValue::Map(Vec::new()));
                let open = Open::Map { node, anchor, key: None, merges: Vec::new(), keys: HashSet::new() };
                self.open(open, mark)
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq(node, anchor)) => self.complete(node, anchor, mark),
                Some(Open::Map { mut node, anchor, key: None, merges, .. }) => {
                    if let NodeValue::Map(entries) = &mut node.value {
                        merges.into_iter().for_each(|m| merge_into(entries, m));
                    }
                    self.complete(node, anchor, mark)
                }
                Some(Open::Map { .. }) => Err(self.error(mark, "mapping key without a value".into())),
                None => Err(self.error(mark, "unbalanced end of collection".into())),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => Ok(()),
        }
    }

    fn count(&mut self, n: usize, mark: &Marker) -> Result<(), SyntaxError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(self.error(mark, format!("document expands to more than {MAX_NODES} values")));
        }
        Ok(())
    }

    fn open(&mut self, open: Open, mark: &Marker) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(mark, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.count(1, mark)?;
        self.stack.push(open);
        Ok(())
    }

    /// Attaches a finished value to its parent (or makes it the root).
    fn complete(&mut self, node: Node, anchor: usize, mark: &Marker) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.count(1, mark)?;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(parent, _)) => {
                if let NodeValue::Seq(items) = &mut parent.value {
                    items.push(node);
                }
            }
            Some(Open::Map { node: parent, key: pending, merges, keys, .. }) => match pending.take() {
                None => {
                    let key = match node.value {
                        NodeValue::String(s) => s,
                        NodeValue::Null => "null".to_owned(),
                        NodeValue::Bool(b) => b.to_string(),
                        NodeValue::Int(i) => i.to_string(),
                        NodeValue::Float(f) => f.to_string(),
                        NodeValue::Seq(_) | NodeValue::Map(_) => {
                            return Err(self.error(mark, "mapping keys must be scalars".into()));
                        }
                    };
                    *pending = Some((key, node.line, node.column));
                }
                Some((key, _, _)) if key == "<<" => merges.push(node),
                Some((key, line, column)) => {
                    if let NodeValue::Map(entries) = &mut parent.value {
                        if !keys.insert(key.clone()) {
                            return Err(SyntaxError {
                                line,
                                column,
                                message: format!("duplicate key {key:?}"),
                            });
                        }
                        entries.push(Entry { key, line, value: node });
                    }
                }
            },
        }
        Ok(())
    }
}

/// YAML merge keys (`<<: *base`): keys written in the mapping itself win.
fn merge_into(entries: &mut Vec<Entry>, source: Node) {
    let maps = match source.value {
        NodeValue::Map(m) => vec![m],
        NodeValue::Seq(items) => items
            .into_iter()
            .filter_map(|n| match n.value {
                NodeValue::Map(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for entry in maps.into_iter().flatten() {
        if !entries.iter().any(|e| e.key == entry.key) {
            entries.push(entry);
        }
    }
}

/// Resolves a scalar the way Kubernetes' YAML reader does (YAML 1.2 core schema).
fn scalar(text: String, style: TScalarStyle, tag: Option<&str>) -> NodeValue {
    if style != TScalarStyle::Plain || tag == Some("str") {
        return NodeValue::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(&text) {
        return NodeValue::Int(i);
    }
    let looks_numeric = text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        return NodeValue::Float(f);
    }
    NodeValue::String(text)
}

fn parse_int(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Node {
    /// Number of values in this subtree (aliases count at their full size).
    fn size(&self) -> usize {
        let mut total = 0;
        let mut todo = vec![self];
        while let Some(n) = todo.pop() {
            total += 1;
            match &n.value {
                NodeValue::Seq(items) => todo.extend(items),
                NodeValue::Map(entries) => todo.extend(entries.iter().map(|e| &e.value)),
                _ => {}
            }
        }
        total
    }

    /// The entry at `key` when this is a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The value at `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The line of the deepest field along `path` that exists (a key's own line for map
    /// entries), so a message about `spec.http[0].timeout` points at `timeout:`.
    pub fn line_of(&self, path: &FieldPath) -> u32 {
        let mut node = self;
        let mut line = self.line;
        for segment in path.segments() {
            let next = match (segment, &node.value) {
                (Segment::Key(k), NodeValue::Map(_)) => node.entry(k).map(|e| (e.line, &e.value)),
                (Segment::Index(i), NodeValue::Seq(items)) => items.get(*i).map(|n| (n.line, n)),
                _ => None,
            };
            match next {
                Some((at, n)) => (line, node) = (at, n),
                None => break,
            }
        }
        line
    }

    /// The plain JSON value of this tree.
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::Number((*i).into()),
            NodeValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect::<Map<_, _>>(),
            ),
        }
    }
}

/// Prints a JSON value as a YAML document.
pub fn emit(value: &Value) -> String {
    let mut out = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
    // Writing into a String cannot fail.
    let _ = emitter.dump(&to_yaml(value));
    out.push('\n');
    out
}

fn to_yaml(value: &Value) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => n.as_i64().map_or_else(|| Yaml::Real(n.to_string()), Yaml::Integer),
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Value::Object(map) => {
            Yaml::Hash(map.iter().map(|(k, v)| (Yaml::String(k.clone()), to_yaml(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut docs = parse_stream(text);
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0).expect("parses").root.expect("not empty")
    }

    #[test]
    fn keeps_lines_of_nested_values() {
        let root = one("a: 1\nb:\n  c:\n    - x\n    - y: 2\n");
        assert_eq!(root.line_of(&FieldPath::parse("b.c[1].y")), 5);
        assert_eq!(root.line_of(&FieldPath::parse("b.c[0]")), 4);
        assert_eq!(root.line_of(&FieldPath::parse("b.missing")), 2);
        assert_eq!(root.to_json(), serde_json::json!({"a": 1, "b": {"c": ["x", {"y": 2}]}}));
    }

    #[test]
    fn documents_are_independent() {
        let docs = parse_stream("a: 1\n---\nb: [\n---\n# comment\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_ok());
        let err = docs[1].as_ref().expect_err("unclosed flow sequence");
        assert_eq!(err.line, 3, "the last line of the document, not the separator after it");
        let third = docs[2].as_ref().expect("third parses");
        assert_eq!(third.first_line, 6);
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let v = one("a: '1'\nb: 1\nc: 1.5\nd: yes\ne: ~\nf: 0x1F\ng: 1h\n").to_json();
        assert_eq!(
            v,
            serde_json::json!({"a": "1", "b": 1, "c": 1.5, "d": "yes", "e": null, "f": 31, "g": "1h"})
        );
    }

    #[test]
    fn hostile_input_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000);
        let err = parse_stream(&deep).remove(0).expect_err("too deep");
        assert!(err.message.contains("nesting deeper") || err.message.contains("recursion limit"), "{err}");

        let dup = parse_stream("a: 1\na: 2\n").remove(0).expect_err("duplicate key");
        assert_eq!((dup.line, dup.message.as_str()), (2, "duplicate key \"a\""));

        let mut laughs = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let refs = vec![format!("*l{}", level - 1); 10].join(", ");
            laughs.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        let err = parse_stream(&laughs).remove(0).expect_err("billion laughs");
        assert!(err.message.contains("expands to more than"), "{err}");
    }

    #[test]
    fn flow_scalars_keep_a_colon_before_a_flow_indicator_as_go_yaml_does() {
        let v = one("addresses: [1.2.3.4, 001:db8::]\nm: {a:, b: c}\nn: [x: y, \"q\":[1], p:1]\n").to_json();
        assert_eq!(
            v,
            serde_json::json!({
                "addresses": ["1.2.3.4", "001:db8::"],
                "m": {"a:": null, "b": "c"},
                "n": [{"x": "y"}, {"q": [1]}, "p:1"],
            })
        );
        let block = one("a: b:]\n").to_json();
        assert_eq!(block, serde_json::json!({"a": "b:]"}), "block context is untouched");
        let root = one("x:\n  - [a\"b\\c:]\n  - after\n");
        assert_eq!(root.to_json(), serde_json::json!({"x": [["a\"b\\c:"], "after"]}));
        assert_eq!(root.line_of(&FieldPath::parse("x[1]")), 3, "lines are unchanged");
    }

    #[test]
    fn flow_closer_at_the_key_indentation_is_read_as_go_yaml_reads_it() {
        let v = one("spec:\n  args: [\n      \"-a\", \"b\",\n  ]\n  env: 1\n").to_json();
        assert_eq!(v, serde_json::json!({"spec": {"args": ["-a", "b"], "env": 1}}));
    }

    #[test]
    fn a_mapping_with_many_keys_parses_in_linear_time() {
        let text: String = (0..50_000).map(|i| format!("k{i}: {i}\n")).collect();
        let root = one(&text);
        let NodeValue::Map(entries) = &root.value else { panic!("a mapping") };
        assert_eq!(entries.len(), 50_000);
    }

    #[test]
    fn merge_keys_and_anchors() {
        let v = one("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n").to_json();
        assert_eq!(v["derived"], serde_json::json!({"y": 3, "x": 1}));
    }
}
