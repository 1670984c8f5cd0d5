//! Loading a JSON `kind: List` file item by item, for callers that keep the items of the
//! last load (the control plane's pods file: ten thousand pods, one of which changes).
//!
//! [`split`] finds each item's text and position with a JSON parser (fast) and checks that the
//! file's skeleton (the List with its items left empty) is what [`load_bytes`](super::load_bytes) reads as a List;
//! [`load_item`] parses one item on its own and moves its positions to where it sits in the
//! file, and [`moved`] moves an item loaded before to a new position. The resources are those
//! [`load_bytes`](super::load_bytes) gives for the whole file, positions included; whenever that cannot be
//! guaranteed (not JSON, another shape, an item that does not load cleanly, sizes near the
//! parser's limits) these return `None` and the caller loads the file whole.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Loaded, load_resource};
use crate::resource::Resource;
use crate::yaml::{self, Node, NodeValue};

/// Files smaller than this are loaded whole: splitting would not pay.
pub const MIN_BYTES: usize = 64 * 1024;

/// One item of a List file: its text and where it starts (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemText<'a> {
    pub text: &'a str,
    pub line: u32,
    pub column: u32,
}

#[derive(Deserialize)]
struct Outer<'a> {
    kind: String,
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// The items of `text` when it is a JSON object of `kind: List` that [`load_bytes`](super::load_bytes) reads
/// as the same List; `None` otherwise.
pub fn split(text: &str) -> Option<Vec<ItemText<'_>>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let outer: Outer<'_> = serde_json::from_str(text).ok()?;
    if outer.kind != "List" {
        return None;
    }
    // The skeleton, items emptied, must load as one List document with as many items.
    let mut skeleton = String::with_capacity(text.len().min(4096));
    let mut rest = 0;
    let mut items = Vec::with_capacity(outer.items.len());
    let mut position = Position::default();
    for item in &outer.items {
        let item = item.get();
        let start = (item.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        let end = start.checked_add(item.len())?;
        let before = text.get(rest..start)?;
        skeleton.push_str(before);
        skeleton.push_str("{}");
        position.advance(before);
        items.push(ItemText { text: item, line: position.line, column: position.column });
        position.advance(item);
        rest = end;
    }
    skeleton.push_str(text.get(rest..)?);
    let documents = yaml::parse_stream(&skeleton);
    let [Ok(yaml::Document { root: Some(root), .. })] = documents.as_slice() else { return None };
    let doc = root.to_json();
    let same = doc.get("kind").and_then(serde_json::Value::as_str) == Some("List")
        && doc.get("items").and_then(serde_json::Value::as_array).is_some_and(|a| a.len() == items.len());
    same.then_some(items)
}

/// Loads `item` of file `file` as [`load_bytes`](super::load_bytes) loads it within the whole file: the resource
/// when it loads cleanly, `None` when it does not (the caller loads the file whole, for its
/// errors).
pub fn load_item(file: &Arc<Path>, item: ItemText<'_>) -> Option<Resource> {
    let documents = yaml::parse_stream(item.text);
    let [Ok(yaml::Document { root: Some(root), .. })] = documents.as_slice() else { return None };
    // Within the List the item sits two levels deeper, among the other items' values.
    let (nodes, depth) = size(root);
    if depth + 3 > yaml::MAX_DEPTH || nodes > yaml::MAX_NODES / 4 {
        return None;
    }
    let mut tree = root.clone();
    shift(&mut tree, 1, i64::from(item.line) - 1, i64::from(item.column) - 1);
    let doc = tree.to_json();
    let mut loaded = Loaded::default();
    load_resource(file, Arc::new(tree), doc, &mut loaded);
    let Loaded { mut resources, errors } = loaded;
    (errors.is_empty() && resources.len() == 1).then(|| resources.pop()).flatten()
}

/// `resource`, loaded by [`load_item`] at `from`, as it loads at `to`.
pub fn moved(resource: &Resource, from: (u32, u32), to: (u32, u32)) -> Resource {
    let mut tree = (*resource.origin.tree).clone();
    shift(&mut tree, from.0, i64::from(to.0) - i64::from(from.0), i64::from(to.1) - i64::from(from.1));
    let mut moved = resource.clone();
    moved.origin.location.line = tree.line;
    moved.origin.location.column = tree.column;
    moved.origin.tree = Arc::new(tree);
    moved
}

/// Moves every position of `node` by `lines`, and those on line `first` also by `columns`.
fn shift(node: &mut Node, first: u32, lines: i64, columns: i64) {
    let mut todo = vec![node];
    while let Some(node) = todo.pop() {
        if node.line == first {
            node.column = add(node.column, columns);
        }
        node.line = add(node.line, lines);
        match &mut node.value {
            NodeValue::Seq(items) => todo.extend(items.iter_mut()),
            NodeValue::Map(entries) => {
                for entry in entries.iter_mut() {
                    entry.line = add(entry.line, lines);
                    todo.push(&mut entry.value);
                }
            }
            _ => {}
        }
    }
}

fn add(at: u32, by: i64) -> u32 {
    u32::try_from(i64::from(at).saturating_add(by)).unwrap_or(u32::MAX)
}

/// Values in `node` and its depth.
fn size(node: &Node) -> (usize, usize) {
    let (mut nodes, mut deepest) = (0, 0);
    let mut todo = vec![(node, 1usize)];
    while let Some((node, depth)) = todo.pop() {
        nodes += 1;
        deepest = deepest.max(depth);
        match &node.value {
            NodeValue::Seq(items) => todo.extend(items.iter().map(|n| (n, depth + 1))),
            NodeValue::Map(entries) => todo.extend(entries.iter().map(|e| (&e.value, depth + 1))),
            _ => {}
        }
    }
    (nodes, deepest)
}

/// A line and column counted as the YAML loader counts them: lines end at LF, CRLF or a
/// lone CR; columns are characters.
#[derive(Debug, Clone, Copy)]
struct Position {
    line: u32,
    column: u32,
}

impl Default for Position {
    fn default() -> Self {
        Position { line: 1, column: 1 }
    }
}

impl Position {
    fn advance(&mut self, text: &str) {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' | '\r' => {
                    self.line = self.line.saturating_add(1);
                    self.column = 1;
                }
                _ => self.column = self.column.saturating_add(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_bytes;

    fn pods(n: usize, label: &str) -> serde_json::Value {
        let items: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("p-{i}"), "namespace": "shop", "labels": {"app": label, "note": "é✓"}},
                    "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
                    "status": {"podIP": format!("127.0.{}.{}", i / 200, i % 200 + 1)}
                })
            })
            .collect();
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    fn whole(text: &str) -> Vec<String> {
        let mut loaded = Loaded::default();
        load_bytes(Arc::from(Path::new("pods.yaml")), text.as_bytes(), &mut loaded);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        loaded.resources.iter().map(|r| format!("{r:?}")).collect()
    }

    fn by_item(text: &str) -> Vec<String> {
        let file: Arc<Path> = Arc::from(Path::new("pods.yaml"));
        let items = split(text).expect("splits");
        items.into_iter().map(|item| format!("{:?}", load_item(&file, item).expect("loads"))).collect()
    }

    #[test]
    fn items_load_as_the_whole_file_does_positions_included() {
        let list = pods(20, "a");
        let compact = list.to_string();
        let pretty = serde_json::to_string_pretty(&list).expect("json");
        let crlf = pretty.replace('\n', "\r\n");
        let tabs = pretty.replace("  ", "\t");
        for text in [&compact, &pretty, &crlf, &tabs] {
            let (whole, by_item) = (whole(text), by_item(text));
            assert_eq!(whole.len(), 20);
            assert_eq!(whole, by_item);
        }
        let pretty_lines: Vec<u32> = split(&pretty).expect("splits").iter().map(|i| i.line).collect();
        assert_eq!(pretty_lines[..3], [4, 31, 58], "each item starts on its own line");
    }

    #[test]
    fn a_moved_item_is_the_item_loaded_where_it_now_is() {
        let file: Arc<Path> = Arc::from(Path::new("pods.yaml"));
        for text in [pods(5, "a").to_string(), serde_json::to_string_pretty(&pods(5, "a")).expect("json")] {
            let items = split(&text).expect("splits");
            let first = load_item(&file, items[0]).expect("loads");
            let last = items[4];
            let moved = moved(&first, (items[0].line, items[0].column), (last.line, last.column));
            let there = load_item(&file, ItemText { text: items[0].text, ..last }).expect("loads");
            assert_eq!(format!("{moved:?}"), format!("{there:?}"));
        }
    }

    #[test]
    fn anything_but_a_clean_json_list_is_left_to_the_whole_file_loader() {
        assert_eq!(split("apiVersion: v1\nkind: List\nitems: []\n"), None, "YAML");
        assert_eq!(split(r#"{"kind": "Pod", "items": []}"#), None, "not a List");
        assert_eq!(split(r#"{"kind": "List", "items": [], "kind": "List"}"#), None, "repeated key");
        assert_eq!(split(r#"{"kind": "List", "items": [1]} trailing"#), None, "not one JSON value");
        assert_eq!(split(r#"{"kind": "List"}"#), None, "no items");
        assert_eq!(split(r#"{"kind": "List", "items": []}"#), Some(Vec::new()));
        let file: Arc<Path> = Arc::from(Path::new("pods.yaml"));
        let items = split(r#"{"kind": "List", "items": [{"kind": "Pod"}, 7]}"#).expect("splits");
        assert!(load_item(&file, items[0]).is_none(), "no apiVersion: an error, reported by the whole load");
        assert!(load_item(&file, items[1]).is_none(), "not an object");
    }
}
