//! Parsed config files, kept between reloads and reused while a file's content is unchanged.
//!
//! Every reload lists the watched paths as [`load::load_paths`] does, reads every file, and
//! parses only the files whose bytes differ from the last read (length and a 128-bit digest of
//! the content); the others give back the resources and errors they gave before, shared
//! (`Arc`), so a one-file edit in a thousand-file config costs one parse. Files that are gone
//! are forgotten. The result is what [`load::load_paths`] returns for the same files, in the
//! same order, with the same locations: analysis still sees everything on every change.
//!
//! A large JSON `kind: List` (the pods file) is cached item by item ([`load::list`]): when one
//! pod changes, that pod is parsed, and the others are reused (moved, when an earlier item's
//! size change shifted them).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paymesh_config::Loaded;
use paymesh_config::load::list::{self, ItemText};
use paymesh_config::load::{self, LoadError};
use paymesh_config::resource::Resource;

/// Resources and load errors, the resources shared with the cache and the stores built from it.
#[derive(Debug, Default, Clone)]
pub struct SharedLoaded {
    /// The resources, in file order.
    pub resources: Vec<Arc<Resource>>,
    /// What could not be read or parsed.
    pub errors: Vec<LoadError>,
}

impl From<Loaded> for SharedLoaded {
    fn from(loaded: Loaded) -> Self {
        SharedLoaded {
            resources: loaded.resources.into_iter().map(Arc::new).collect(),
            errors: loaded.errors,
        }
    }
}

/// A file's content length and digest.
type Key = (usize, u128);

/// A List file's items by content digest: where each was and what it loaded as.
type Items = HashMap<u128, ((u32, u32), Arc<Resource>)>;

/// What one file parsed into.
#[derive(Debug)]
struct Entry {
    key: Key,
    parsed: Arc<SharedLoaded>,
    /// Its items, when it was loaded item by item.
    items: Option<Items>,
}

/// A file to parse: its place in the load order, path, content and key, and its items the
/// last time.
struct Changed {
    slot: usize,
    path: PathBuf,
    bytes: Vec<u8>,
    key: Key,
    previous: Option<Items>,
}

/// A file parsed.
struct Parsed {
    slot: usize,
    path: PathBuf,
    parsed: Arc<SharedLoaded>,
    key: Key,
    items: Option<Items>,
}

/// Parsed files by path.
#[derive(Debug)]
pub struct FileCache {
    files: HashMap<PathBuf, Entry>,
    /// Keys the content digest; fixed for the cache's life.
    hasher: RandomState,
    parses: u64,
}

impl Default for FileCache {
    fn default() -> Self {
        FileCache { files: HashMap::new(), hasher: RandomState::new(), parses: 0 }
    }
}

impl FileCache {
    /// Loads every config file under `paths`, parsing only what changed since the last call.
    /// Blocking.
    pub fn load<P: AsRef<Path>>(&mut self, paths: &[P]) -> SharedLoaded {
        let mut out = SharedLoaded::default();
        let files = load::config_files(paths, &mut out.errors);
        // Read everything first: reading is cheap next to parsing, and the digest is what
        // tells an edit apart (an mtime can stay put across a same-size rewrite).
        let mut changed: Vec<Changed> = Vec::new();
        let mut slots: Vec<Option<Result<Arc<SharedLoaded>, LoadError>>> = Vec::with_capacity(files.len());
        for (slot, path) in files.iter().enumerate() {
            match load::read_file(path) {
                Err(error) => slots.push(Some(Err(error))),
                Ok(bytes) => {
                    let key = (bytes.len(), digest(&self.hasher, &bytes));
                    match self.files.get_mut(path) {
                        Some(entry) if entry.key == key => slots.push(Some(Ok(Arc::clone(&entry.parsed)))),
                        entry => {
                            slots.push(None);
                            let previous = entry.and_then(|e| e.items.take());
                            changed.push(Changed { slot, path: path.clone(), bytes, key, previous });
                        }
                    }
                }
            }
        }
        for Parsed { slot, path, parsed, key, items } in parse_all(&self.hasher, changed) {
            self.parses += 1;
            self.files.insert(path, Entry { key, parsed: Arc::clone(&parsed), items });
            slots[slot] = Some(Ok(parsed));
        }
        let present: std::collections::HashSet<&PathBuf> = files.iter().collect();
        self.files.retain(|path, _| present.contains(path));
        for slot in slots.into_iter().flatten() {
            match slot {
                Ok(parsed) => {
                    out.resources.extend(parsed.resources.iter().cloned());
                    out.errors.extend(parsed.errors.iter().cloned());
                }
                Err(error) => {
                    out.errors.push(error);
                }
            }
        }
        out
    }

    /// Files parsed since the cache was made (a file reused from the cache is not counted).
    pub fn parses(&self) -> u64 {
        self.parses
    }
}

/// A 128-bit digest of `bytes`, keyed by `hasher`.
fn digest(hasher: &RandomState, bytes: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut h = hasher.build_hasher();
        h.write_u8(seed);
        h.write(bytes);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// A large `kind: List` JSON file, item by item, reusing the items of `previous`; `None`
/// when it must be loaded whole.
fn load_items(
    hasher: &RandomState,
    path: &Path,
    bytes: &[u8],
    previous: Option<&Items>,
) -> Option<(SharedLoaded, Items)> {
    if bytes.len() < list::MIN_BYTES {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let file: Arc<Path> = Arc::from(path);
    let mut items = Items::new();
    let mut resources = Vec::new();
    for item in list::split(text)? {
        let ItemText { text, line, column } = item;
        let key = digest(hasher, text.as_bytes());
        let at = (line, column);
        let resource = match previous.and_then(|p| p.get(&key)) {
            Some((from, resource)) if *from == at => Arc::clone(resource),
            Some((from, resource)) => Arc::new(list::moved(resource, *from, at)),
            None => Arc::new(list::load_item(&file, item)?),
        };
        items.insert(key, (at, Arc::clone(&resource)));
        resources.push(resource);
    }
    Some((SharedLoaded { resources, errors: Vec::new() }, items))
}

/// Parses the changed files on all cores, as [`load::load_paths`] does.
fn parse_all(hasher: &RandomState, changed: Vec<Changed>) -> Vec<Parsed> {
    let parse = |Changed { slot, path, bytes, key, previous }: Changed| {
        if let Some((parsed, items)) = load_items(hasher, &path, &bytes, previous.as_ref()) {
            return Parsed { slot, path, parsed: Arc::new(parsed), key, items: Some(items) };
        }
        let mut loaded = Loaded::default();
        load::load_bytes(Arc::from(path.as_path()), &bytes, &mut loaded);
        Parsed { slot, path, parsed: Arc::new(SharedLoaded::from(loaded)), key, items: None }
    };
    let workers = std::thread::available_parallelism().map_or(1, usize::from).min(changed.len());
    if workers <= 1 {
        return changed.into_iter().map(parse).collect();
    }
    let chunk = changed.len().div_ceil(workers);
    let mut parts: Vec<Vec<_>> = Vec::new();
    let mut rest = changed;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(parse).collect::<Vec<_>>()))
            .collect();
        // A worker only panics on a bug; re-raise it rather than lose its files silently.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}
