//! Parsed config files, kept between reloads and reused while a file's content is unchanged.
//!
//! Every reload lists the watched paths as [`load::load_paths`] does, reads every file, and
//! parses only the files whose bytes differ from the last read (length and a 128-bit digest of
//! the content); the others give back the resources and errors they gave before, shared
//! (`Arc`), so a one-file edit in a thousand-file config costs one parse. Files that are gone
//! are forgotten. The result is what [`load::load_paths`] returns for the same files, in the
//! same order, with the same locations: analysis still sees everything on every change.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paymesh_config::Loaded;
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

/// What one file parsed into.
#[derive(Debug)]
struct Entry {
    key: Key,
    parsed: Arc<SharedLoaded>,
}

/// A file to parse: its place in the load order, path, content and key.
struct Changed {
    slot: usize,
    path: PathBuf,
    bytes: Vec<u8>,
    key: Key,
}

/// A file parsed.
struct Parsed {
    slot: usize,
    path: PathBuf,
    parsed: Arc<SharedLoaded>,
    key: Key,
}

/// Parsed files by path.
#[derive(Debug)]
pub struct FileCache {
    files: HashMap<PathBuf, Entry>,
    /// Keys the content digest; fixed for the cache's life.
    hasher: std::hash::RandomState,
    parses: u64,
}

impl Default for FileCache {
    fn default() -> Self {
        FileCache { files: HashMap::new(), hasher: std::hash::RandomState::new(), parses: 0 }
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
                    let key = (bytes.len(), self.digest(&bytes));
                    match self.files.get(path) {
                        Some(entry) if entry.key == key => slots.push(Some(Ok(Arc::clone(&entry.parsed)))),
                        _ => {
                            slots.push(None);
                            changed.push(Changed { slot, path: path.clone(), bytes, key });
                        }
                    }
                }
            }
        }
        for Parsed { slot, path, parsed, key } in parse_all(changed) {
            self.parses += 1;
            self.files.insert(path, Entry { key, parsed: Arc::clone(&parsed) });
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

    fn digest(&self, bytes: &[u8]) -> u128 {
        let half = |seed: u8| {
            let mut h = self.hasher.build_hasher();
            h.write_u8(seed);
            h.write(bytes);
            h.finish()
        };
        (u128::from(half(0)) << 64) | u128::from(half(1))
    }
}

/// Parses the changed files on all cores, as [`load::load_paths`] does.
fn parse_all(changed: Vec<Changed>) -> Vec<Parsed> {
    let parse = |Changed { slot, path, bytes, key }: Changed| {
        let mut loaded = Loaded::default();
        load::load_bytes(Arc::from(path.as_path()), &bytes, &mut loaded);
        Parsed { slot, path, parsed: Arc::new(SharedLoaded::from(loaded)), key }
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
