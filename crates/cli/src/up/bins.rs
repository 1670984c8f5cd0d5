//! Finding the programs `paymesh up` starts: `$PAYMESH_BIN_DIR` first, then the directory of
//! the running `paymesh` (where cargo puts the workspace's binaries), then `PATH`.

use std::path::{Path, PathBuf};

/// Overrides where paymesh's own binaries are found.
pub const BIN_DIR_ENV: &str = "PAYMESH_BIN_DIR";

/// The directories searched, in order.
#[derive(Debug, Clone)]
pub struct Bins {
    dirs: Vec<PathBuf>,
}

impl Bins {
    /// `$PAYMESH_BIN_DIR`, the current executable's directory, then `$PATH`.
    pub fn from_env() -> Self {
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
            dirs.push(dir);
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        Self { dirs }
    }

    /// The executable for `program`: a path containing `/` is taken as it is (if it exists).
    pub fn resolve(&self, program: &str) -> Option<PathBuf> {
        if program.contains('/') {
            let path = PathBuf::from(program);
            return is_executable(&path).then_some(path);
        }
        self.dirs.iter().map(|dir| dir.join(program)).find(|path| is_executable(path))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
