//! Reading resources from files and directories.
//!
//! Paths are walked recursively (`.yaml`, `.yml`, `.json`, in name order). Every document
//! that fails — unreadable file, invalid UTF-8, bad YAML, missing `kind`, a field of the
//! wrong type — becomes a [`LoadError`] naming file:line (and the resource and field when
//! known); every other document still loads. Duplicates (same kind, namespace and name)
//! are reported by the [`Store`](crate::Store).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::path::FieldPath;
use crate::resource::{ApiVersion, FieldError, KindSupport, Metadata, Origin, Resource, Spec};
use crate::source::Location;
use crate::yaml::{self, Node};

pub mod list;

/// Largest file read; Kubernetes itself caps an object at 1.5 MB.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Everything read from a set of paths: the resources, and what could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub errors: Vec<LoadError>,
}

/// A document or file that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub location: Location,
    /// `Kind namespace/name` when the document got that far.
    pub resource: Option<String>,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Io(String),
    TooLarge {
        bytes: u64,
    },
    InvalidUtf8 {
        byte: usize,
    },
    Syntax(String),
    NotAnObject,
    MissingField(&'static str),
    UnknownKind {
        api_version: String,
        kind: String,
    },
    /// A field that does not fit the kind's schema (wrong type, unknown field, bad value).
    Schema(FieldError),
    Duplicate {
        first: Location,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        }
        match &self.problem {
            Problem::Io(e) => write!(f, "cannot read: {e}"),
            Problem::TooLarge { bytes } => {
                write!(f, "file is {bytes} bytes, larger than the {MAX_FILE_BYTES}-byte limit")
            }
            Problem::InvalidUtf8 { byte } => write!(f, "invalid UTF-8 at byte {byte}"),
            Problem::Syntax(e) => write!(f, "invalid YAML: {e}"),
            Problem::NotAnObject => f.write_str("a resource must be a mapping with apiVersion and kind"),
            Problem::MissingField(field) => write!(f, "missing required field {field:?}"),
            Problem::UnknownKind { api_version, kind } => {
                write!(f, "unknown kind {kind:?} in {api_version:?}")
            }
            Problem::Schema(e) => write!(f, "{e}"),
            Problem::Duplicate { first } => write!(f, "duplicate resource, first defined at {first}"),
        }
    }
}

/// Loads every resource under `paths`, in path order. Files are independent, so they are
/// parsed on all cores (parsing is most of `paymesh analyze`'s time); the result does not
/// depend on how many.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Loaded {
    let mut loaded = Loaded::default();
    let files = config_files(paths, &mut loaded.errors);
    let workers = std::thread::available_parallelism().map_or(1, usize::from).min(files.len()).max(1);
    let chunk = files.len().div_ceil(workers).max(1);
    let parts: Vec<Loaded> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut loaded = Loaded::default();
                    part.iter().for_each(|file| load_file(file, &mut loaded));
                    loaded
                })
            })
            .collect();
        // A worker only panics on a bug; re-raise it rather than lose its files silently.
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    for part in parts {
        loaded.resources.extend(part.resources);
        loaded.errors.extend(part.errors);
    }
    loaded
}

/// The config files under `paths`, in the order [`load_paths`] loads them; directories that
/// cannot be read land in `errors`. With [`read_file`] and [`load_bytes`], a caller that
/// caches parsed files (the control plane) loads exactly what [`load_paths`] would.
pub fn config_files<P: AsRef<Path>>(paths: &[P], errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    paths.iter().flat_map(|path| collect_files(path.as_ref(), errors)).collect()
}

/// Loads one file; `loaded` receives its resources and errors.
pub fn load_file(path: &Path, loaded: &mut Loaded) {
    match read_file(path) {
        Ok(bytes) => load_bytes(Arc::from(path), &bytes, loaded),
        Err(e) => loaded.errors.push(e),
    }
}

/// The contents of the config file `path`: a regular file of at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let at_start = || Location::new(Arc::from(path), 1, 1);
    let bytes = match fs::metadata(path) {
        // Reading a FIFO or a device could block or never end.
        Ok(meta) if !meta.is_file() => {
            return Err(error(at_start(), None, Problem::Io("not a regular file".into())));
        }
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return Err(error(at_start(), None, Problem::TooLarge { bytes: meta.len() }));
        }
        Ok(_) => fs::read(path),
        Err(e) => Err(e),
    };
    bytes.map_err(|e| error(at_start(), None, Problem::Io(e.to_string())))
}

/// Loads resources from the contents of `file`.
pub fn load_bytes(file: Arc<Path>, bytes: &[u8], loaded: &mut Loaded) {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let byte = e.valid_up_to();
            let before = &bytes[..byte];
            // Lines end at LF, CRLF or a lone CR, as YAML counts them.
            let breaks = before
                .iter()
                .enumerate()
                .filter(|&(i, b)| *b == b'\n' || (*b == b'\r' && before.get(i + 1) != Some(&b'\n')))
                .count();
            let line = 1 + u32::try_from(breaks).unwrap_or(u32::MAX);
            return loaded.errors.push(error(
                Location::new(file, line, 1),
                None,
                Problem::InvalidUtf8 { byte },
            ));
        }
    };
    for document in yaml::parse_stream(text) {
        match document {
            Err(e) => loaded.errors.push(error(
                Location::new(file.clone(), e.line, e.column),
                None,
                Problem::Syntax(e.message),
            )),
            Ok(yaml::Document { root: None, .. }) => {}
            Ok(yaml::Document { root: Some(root), .. }) => load_document(&file, Arc::new(root), loaded),
        }
    }
}

fn load_document(file: &Arc<Path>, tree: Arc<Node>, loaded: &mut Loaded) {
    let location = Location::new(file.clone(), tree.line, tree.column);
    let doc = tree.to_json();
    if doc.get("kind").and_then(Value::as_str) == Some("List") {
        let Some(items) = doc.get("items").and_then(Value::as_array) else {
            return loaded.errors.push(error(location, None, Problem::MissingField("items")));
        };
        for (i, item) in items.iter().enumerate() {
            let item_tree = match &tree.value {
                yaml::NodeValue::Map(_) => match tree.get("items").map(|n| &n.value) {
                    Some(yaml::NodeValue::Seq(nodes)) => nodes.get(i).cloned(),
                    _ => None,
                },
                _ => None,
            };
            let item_tree = Arc::new(item_tree.unwrap_or_else(|| (*tree).clone()));
            load_resource(file, item_tree, item.clone(), loaded);
        }
        return;
    }
    load_resource(file, tree, doc, loaded);
}

fn load_resource(file: &Arc<Path>, tree: Arc<Node>, doc: Value, loaded: &mut Loaded) {
    let location = Location::new(file.clone(), tree.line, tree.column);
    let Value::Object(object) = &doc else {
        return loaded.errors.push(error(location, None, Problem::NotAnObject));
    };
    let Some(api_version) = object.get("apiVersion").and_then(Value::as_str).map(ApiVersion::parse) else {
        return loaded.errors.push(error(location, None, Problem::MissingField("apiVersion")));
    };
    let Some(kind) = object.get("kind").and_then(Value::as_str).map(str::to_owned) else {
        return loaded.errors.push(error(location, None, Problem::MissingField("kind")));
    };
    let meta = match metadata(&kind, object.get("metadata")) {
        Ok(meta) => meta,
        Err(problem) => {
            let at = match &problem {
                Problem::Schema(e) => Location { line: tree.line_of(&e.path), ..location },
                _ => location,
            };
            return loaded.errors.push(error(at, Some(kind), problem));
        }
    };
    let origin = Origin { location, tree };
    let name = match &meta.namespace {
        Some(ns) => format!("{kind} {ns}/{}", meta.name),
        None => format!("{kind} {}", meta.name),
    };
    let spec = match Spec::decode(&api_version, &kind, &doc) {
        Ok(KindSupport::Typed(spec)) => spec,
        Ok(KindSupport::Untyped) => Spec::Other,
        Ok(KindSupport::Unknown) => {
            let problem = Problem::UnknownKind { api_version: api_version.to_string(), kind };
            return loaded.errors.push(error(origin.location, Some(name), problem));
        }
        Err(e) => {
            let at = origin.field(&e.path);
            return loaded.errors.push(error(at, Some(name), Problem::Schema(e)));
        }
    };
    loaded.resources.push(Resource { api_version, kind, meta, spec, raw: doc, origin });
}

/// The name istioctl gives an IstioOperator that has none: it is an install option file,
/// never applied as a cluster object, so Istio's own samples often omit its metadata.
const ISTIO_OPERATOR_DEFAULT_NAME: &str = "installed-state";

fn metadata(kind: &str, value: Option<&Value>) -> Result<Metadata, Problem> {
    let empty = serde_json::Map::new();
    let meta = match value {
        Some(Value::Object(meta)) => meta,
        None if kind == "IstioOperator" => &empty,
        _ => return Err(Problem::MissingField("metadata")),
    };
    let default_name = (kind == "IstioOperator").then(|| ISTIO_OPERATOR_DEFAULT_NAME.to_owned());
    let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_owned);
    let map = |key: &str| -> Result<_, Problem> {
        match meta.get(key) {
            None | Some(Value::Null) => Ok(Default::default()),
            Some(v) => crate::resource::decode_value(v, &FieldPath::root().key("metadata").key(key))
                .map_err(Problem::Schema),
        }
    };
    Ok(Metadata {
        name: text("name")
            .or_else(|| text("generateName"))
            .or(default_name)
            .ok_or(Problem::MissingField("metadata.name"))?,
        namespace: text("namespace"),
        labels: map("labels")?,
        annotations: map("annotations")?,
    })
}

fn error(location: Location, resource: Option<String>, problem: Problem) -> LoadError {
    LoadError { location, resource, problem }
}

/// The config files under `path` (the path itself when it is a file), sorted by name.
/// A directory reached twice (through a symlink loop, or two links to one place) is walked
/// once, so a loop costs nothing and no file is loaded twice.
fn collect_files(path: &Path, errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut seen_dirs = std::collections::HashSet::new();
    let mut todo = vec![path.to_path_buf()];
    while let Some(next) = todo.pop() {
        let unreadable = |e: std::io::Error| {
            error(Location::new(Arc::from(next.as_path()), 1, 1), None, Problem::Io(e.to_string()))
        };
        match fs::metadata(&next) {
            Err(e) => errors.push(unreadable(e)),
            Ok(meta)
                if meta.is_dir() && !seen_dirs.insert(fs::canonicalize(&next).unwrap_or(next.clone())) => {}
            Ok(meta) if meta.is_dir() => match fs::read_dir(&next) {
                Err(e) => errors.push(unreadable(e)),
                Ok(entries) => {
                    let mut children: Vec<PathBuf> =
                        entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    children.sort();
                    todo.extend(children.into_iter().rev());
                }
            },
            Ok(_) if next == path || is_config_file(&next) => files.push(next),
            Ok(_) => {}
        }
    }
    files
}

fn is_config_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        load_bytes(Arc::from(Path::new("t.yaml")), text.as_bytes(), &mut loaded);
        loaded
    }

    #[test]
    fn loads_lists_and_multi_documents() {
        let loaded = load_str(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: b, namespace: a}\n",
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let names: Vec<_> = loaded.resources.iter().map(Resource::friendly_name).collect();
        assert_eq!(names, ["Namespace a", "ServiceAccount a/b"]);
        assert_eq!(loaded.resources[1].origin.location.line, 8);
    }

    #[test]
    fn bad_documents_do_not_stop_the_others() {
        let loaded = load_str(
            "kind: Service\nmetadata: {name: x}\n---\n[1, 2\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: 7\n",
        );
        let messages: Vec<_> = loaded.errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0], "t.yaml:1: missing required field \"apiVersion\"");
        assert!(messages[1].starts_with("t.yaml:4: invalid YAML"), "{}", messages[1]);
        assert!(messages[2].starts_with("t.yaml:14: Service s: spec.ports: invalid type"), "{}", messages[2]);
        assert_eq!(loaded.resources.len(), 1);
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let mut loaded = Loaded::default();
        load_bytes(Arc::from(Path::new("u.yaml")), b"a: 1\nb: \xff\n", &mut loaded);
        assert_eq!(loaded.errors[0].to_string(), "u.yaml:2: invalid UTF-8 at byte 8");
    }

    #[test]
    fn symlink_loops_are_walked_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        fs::write(root.join("ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
            .expect("write");
        std::os::unix::fs::symlink(root, root.join("loop")).expect("symlink");
        std::os::unix::fs::symlink(root, root.join("again")).expect("symlink");
        let loaded = load_paths(&[root]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.resources.len(), 1, "the namespace is loaded once");
    }

    #[test]
    fn unknown_istio_kind_is_an_error() {
        let loaded =
            load_str("apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: x}\n");
        assert_eq!(
            loaded.errors[0].to_string(),
            "t.yaml:1: VirtualServce x: unknown kind \"VirtualServce\" in \"networking.istio.io/v1\""
        );
    }
}
