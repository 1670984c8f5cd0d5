//! The open-file limit: a proxy holds a socket per downstream connection, per pooled upstream
//! connection and per listener, so the default soft limit (often 1,024) is reached long before
//! the machine's. [`raise_open_files`] lifts the soft limit to the hard one at start, as Envoy's
//! and linkerd2-proxy's deployments do; the hard limit stays the operator's.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft open-file limit to the hard limit; returns the limit now in force.
pub fn raise_open_files() -> Result<u64, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_becomes_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let soft = hard.min(512);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("lower the soft limit");
        assert_eq!(raise_open_files().expect("raise"), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"), (hard, hard));
    }
}
