//! Property-based fuzzing of [`load::load_bytes`], the entry point every configuration file
//! goes through: arbitrary bytes, and YAML-shaped text generated from a small grammar (keys,
//! scalars of every style, block and flow collections, anchors, aliases, merge keys, tags,
//! document separators) then damaged by a few random edits.
//!
//! The properties: loading never panics, and every error (and every resource) points at a
//! line that exists in the input. The case count is proptest's `PROPTEST_CASES` (256 when
//! unset), small enough for the normal test run; raise it for a long fuzzing session:
//! `PROPTEST_CASES=200000 cargo test -p paymesh-config --test fuzz_load`.

use std::path::Path;
use std::sync::Arc;

use paymesh_config::Loaded;
use paymesh_config::load;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

/// Lines a message may point at: 1 for empty input, else the number of lines an editor
/// shows. Lines end at LF, CRLF or a lone CR (YAML's line breaks); a final break does not
/// start another line.
fn line_count(bytes: &[u8]) -> u32 {
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|&(i, b)| *b == b'\n' || (*b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    let unterminated = usize::from(!bytes.is_empty() && !bytes.ends_with(b"\n") && !bytes.ends_with(b"\r"));
    u32::try_from((breaks + unterminated).max(1)).unwrap_or(u32::MAX)
}

/// Loads `bytes` and checks that every position reported lies inside the input.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut loaded = Loaded::default();
    load::load_bytes(Arc::from(Path::new("fuzz.yaml")), bytes, &mut loaded);
    let lines = line_count(bytes);
    for error in &loaded.errors {
        let line = error.location.line;
        prop_assert!((1..=lines).contains(&line), "error at line {line} of {lines}: {error}");
    }
    for resource in &loaded.resources {
        let line = resource.origin.location.line;
        prop_assert!((1..=lines).contains(&line), "{} at line {line} of {lines}", resource.friendly_name());
    }
    Ok(())
}

/// A YAML value as the grammar builds it, before rendering.
#[derive(Clone, Debug)]
enum Tree {
    Scalar(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
    FlowSeq(Vec<Tree>),
    FlowMap(Vec<(String, Tree)>),
    /// `&name value`: the value, remembered under `name` for later `*name` aliases.
    Anchored(String, Box<Tree>),
    /// `|` or `>` followed by indented text lines.
    Block(String, Vec<String>),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion".to_owned()),
        Just("kind".to_owned()),
        Just("metadata".to_owned()),
        Just("name".to_owned()),
        Just("namespace".to_owned()),
        Just("spec".to_owned()),
        Just("items".to_owned()),
        Just("<<".to_owned()),
        "[a-z][a-zA-Z0-9_.-]{0,8}",
        "'[a-z :#]{0,6}'",
        "\"[a-z\\\\ :]{0,6}\"",
        "[0-9]{1,3}",
        Just("? complex".to_owned()),
        Just("".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_owned()),
        Just("networking.istio.io/v1".to_owned()),
        Just("security.istio.io/v1".to_owned()),
        Just("apps/v1".to_owned()),
        Just("paymesh.io/v1alpha1".to_owned()),
        Just("Service".to_owned()),
        Just("Deployment".to_owned()),
        Just("Namespace".to_owned()),
        Just("List".to_owned()),
        Just("VirtualService".to_owned()),
        Just("DestinationRule".to_owned()),
        Just("RateLimitPolicy".to_owned()),
        Just("~".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("yes".to_owned()),
        Just(".inf".to_owned()),
        Just(".nan".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[-+]?[0-9]{1,25}(\\.[0-9]{0,4})?(e[-+]?[0-9]{1,3})?",
        "0x[0-9a-fA-F]{1,20}",
        "0o[0-7]{1,25}",
        "[a-zA-Z][a-zA-Z0-9 ._/-]{0,12}",
        "'([^'\\n]|''){0,8}'",
        "\"([^\"\\\\\\n]|\\\\[nt0\"\\\\]|\\\\x[0-9a-f]{2}|\\\\u[0-9a-fA-F]{4}){0,8}\"",
        "\\*[a-c]",
        "!![a-z]{1,5} [a-z0-9]{0,4}",
        "![a-z]{0,4} [a-z0-9]{0,4}",
        "[-?:,\\[\\]{}#&*!|>'\"%@` \\t]{1,4}",
        "\\PC{0,6}",
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        8 => scalar().prop_map(Tree::Scalar),
        1 => ("[|>][-+]?[1-9]?", prop::collection::vec("[ a-z:#-]{0,10}", 0..4))
            .prop_map(|(head, lines)| Tree::Block(head, lines)),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Tree::Seq),
            prop::collection::vec((key(), inner.clone()), 0..6).prop_map(Tree::Map),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::FlowSeq),
            prop::collection::vec((key(), inner.clone()), 0..4).prop_map(Tree::FlowMap),
            ("[a-c]", inner).prop_map(|(name, t)| Tree::Anchored(name, Box::new(t))),
        ]
    })
}

/// Renders `tree` in block style (flow inside flow collections), `step` spaces per level.
fn render(tree: &Tree, indent: usize, step: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match tree {
        Tree::Scalar(s) => {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
        Tree::Block(head, lines) => {
            out.push(' ');
            out.push_str(head);
            out.push('\n');
            for line in lines {
                out.push_str(&" ".repeat(indent + step));
                out.push_str(line);
                out.push('\n');
            }
        }
        Tree::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Tree::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Tree::Seq(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push('-');
                render(item, indent + step, step, out);
            }
        }
        Tree::Map(entries) => {
            out.push('\n');
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(key);
                out.push(':');
                render(value, indent + step, step, out);
            }
        }
        Tree::FlowSeq(_) | Tree::FlowMap(_) => {
            out.push(' ');
            flow(tree, out);
            out.push('\n');
        }
        Tree::Anchored(name, value) => {
            out.push_str(" &");
            out.push_str(name);
            render(value, indent, step, out);
        }
    }
}

fn flow(tree: &Tree, out: &mut String) {
    match tree {
        Tree::Scalar(s) => out.push_str(s),
        Tree::Block(head, _) => out.push_str(head),
        Tree::Seq(items) | Tree::FlowSeq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(item, out);
            }
            out.push(']');
        }
        Tree::Map(entries) | Tree::FlowMap(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push_str(": ");
                flow(value, out);
            }
            out.push('}');
        }
        Tree::Anchored(name, value) => {
            out.push('&');
            out.push_str(name);
            out.push(' ');
            flow(value, out);
        }
    }
}

/// A small edit of rendered text, so the parser also sees nearly-valid YAML.
#[derive(Clone, Debug)]
enum Edit {
    /// Re-indents one line by a few spaces (or a tab).
    Indent(Index, String),
    /// Inserts a fragment at a byte position (rounded down to a char boundary).
    Insert(Index, String),
    /// Deletes one character.
    Delete(Index),
    /// Inserts a whole line: a document separator, a comment, a directive.
    Line(Index, String),
    /// Turns every line ending into `\r\n`, or one into a lone `\r`.
    LineEndings(bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), "[ \\t]{0,5}").prop_map(|(i, s)| Edit::Indent(i, s)),
        (any::<Index>(), "[-?:,\\[\\]{}#&*!|>'\"% \\t\\n]{1,3}|\\*[a-c]|&[a-c]|<<: ")
            .prop_map(|(i, s)| Edit::Insert(i, s)),
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), "---|\\.\\.\\.|--- [a-z{\\[]{0,4}|#.{0,6}|%YAML 1\\.[12]|%TAG ! !x|- ")
            .prop_map(|(i, s)| Edit::Line(i, s)),
        any::<bool>().prop_map(Edit::LineEndings),
    ]
}

fn floor_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

fn apply(text: &mut String, edit: &Edit) {
    match edit {
        Edit::Indent(at, pad) => {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if !lines.is_empty() {
                let i = at.index(lines.len());
                let line = lines[i].trim_start().to_owned();
                lines[i] = format!("{pad}{line}");
                *text = lines.join("\n") + "\n";
            }
        }
        Edit::Insert(at, fragment) => {
            let i = floor_boundary(text, at.index(text.len() + 1));
            text.insert_str(i, fragment);
        }
        Edit::Delete(at) => {
            if !text.is_empty() {
                let i = floor_boundary(text, at.index(text.len()));
                text.remove(i);
            }
        }
        Edit::Line(at, line) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = at.index(lines.len() + 1);
            lines.insert(i, line);
            *text = lines.join("\n") + "\n";
        }
        Edit::LineEndings(true) => *text = text.replace('\n', "\r\n"),
        Edit::LineEndings(false) => {
            if let Some(i) = text.find('\n') {
                text.replace_range(i..=i, "\r");
            }
        }
    }
}

/// One or more generated documents, rendered and then edited.
fn yaml_text() -> impl Strategy<Value = String> {
    (prop::collection::vec((tree(), 1usize..4), 1..4), prop::collection::vec(edit(), 0..4), any::<bool>())
        .prop_map(|(documents, edits, explicit_start)| {
            let mut text = String::new();
            for (i, (tree, step)) in documents.iter().enumerate() {
                if i > 0 || explicit_start {
                    text.push_str("---");
                }
                let mut body = String::new();
                render(tree, 0, *step, &mut body);
                // A top-level block collection starts on the line after `---`; a scalar follows it.
                if !text.is_empty() || !body.starts_with('\n') {
                    text.push_str(&body);
                } else {
                    text.push_str(&body[1..]);
                }
            }
            for edit in &edits {
                apply(&mut text, edit);
            }
            text
        })
}

/// A resource-shaped document: the keys the loader looks at, with generated values.
fn resource_text() -> impl Strategy<Value = String> {
    (scalar(), scalar(), tree(), tree(), prop::collection::vec(edit(), 0..3)).prop_map(
        |(api_version, kind, metadata, spec, edits)| {
            let mut text = format!("apiVersion: {api_version}\nkind: {kind}\nmetadata:");
            render(&metadata, 2, 2, &mut text);
            text.push_str("spec:");
            render(&spec, 2, 2, &mut text);
            for edit in &edits {
                apply(&mut text, edit);
            }
            text
        },
    )
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes)?;
    }

    #[test]
    fn arbitrary_text(text in "\\PC{0,200}|[-\\[\\]{}:,#&*!|>'\" \\t\\n\\r?a-c0-9]{0,300}") {
        check(text.as_bytes())?;
    }

    #[test]
    fn generated_yaml(text in yaml_text()) {
        check(text.as_bytes())?;
    }

    #[test]
    fn generated_resources(text in resource_text()) {
        check(text.as_bytes())?;
    }
}

#[test]
fn line_count_is_what_an_editor_shows() {
    assert_eq!(line_count(b""), 1);
    assert_eq!(line_count(b"a: 1"), 1);
    assert_eq!(line_count(b"a: 1\n"), 1);
    assert_eq!(line_count(b"a: 1\nb: ["), 2);
    assert_eq!(line_count(b"a: 1\n\n"), 2);
    assert_eq!(line_count(b"a: 1\r\nb: 2\r\n"), 2);
    assert_eq!(line_count(b"a: 1\rb: 2"), 2);
}

#[test]
fn an_unclosed_collection_at_the_end_points_at_the_last_line() {
    let mut loaded = Loaded::default();
    let text = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n  labels: {a: 1\n";
    load::load_bytes(Arc::from(Path::new("t.yaml")), text, &mut loaded);
    let messages: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        ["t.yaml:5: invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'"]
    );
}
