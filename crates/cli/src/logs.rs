//! `paymesh logs`: a pod's app or proxy log, as `kubectl logs` shows a container's.
//!
//! The supervisor appends each process's stdout and stderr to
//! `.paymesh/logs/<pod>/{app,proxy}.log`; this prints the file and, with `-f`, keeps printing
//! what is appended until interrupted. Logs stay after `paymesh up` exits, so a pod named
//! exactly is found from its log directory when no state file is left.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;

use crate::state::{DEFAULT_STATE_DIR, State, StateError};

/// How often `-f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pod name, or `deploy/NAME` for a Deployment's first pod.
    target: String,
    /// Only look in this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Which process: the app, or its sidecar proxy (default: app, or proxy for a gateway).
    #[arg(short = 'c', long, value_enum)]
    container: Option<Container>,
    /// Keep printing new output until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The state directory of `paymesh up`.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Container {
    App,
    Proxy,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = log_path(&args)?;
    let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut stdout = std::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n > 0 {
            if stdout.write_all(&buf[..n]).is_err() {
                return Ok(ExitCode::SUCCESS);
            }
            continue;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let _ = stdout.flush();
        std::thread::sleep(FOLLOW_POLL);
        // A log truncated behind us is read again from its start.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if file.stream_position().is_ok_and(|pos| pos > len) {
            file.seek(SeekFrom::Start(0)).with_context(|| format!("rewinding {}", path.display()))?;
        }
    }
}

fn log_path(args: &Args) -> anyhow::Result<PathBuf> {
    let state = match State::read(&args.state_dir) {
        Ok(state) => state,
        Err(StateError::NotRunning { .. }) if !args.target.contains('/') => {
            return from_log_dir(&args.state_dir, &args.target, args.container);
        }
        Err(e) => return Err(e.into()),
    };
    let pod = state.find_pod(&args.target, args.namespace.as_deref())?;
    let process = match args.container {
        Some(Container::App) => {
            pod.app.as_ref().with_context(|| format!("{} has no app container", pod.name))?
        }
        Some(Container::Proxy) => {
            pod.proxy.as_ref().with_context(|| format!("{} has no sidecar", pod.name))?
        }
        None => {
            pod.app.as_ref().or(pod.proxy.as_ref()).with_context(|| format!("{} runs nothing", pod.name))?
        }
    };
    Ok(process.log.clone())
}

/// `<state>/logs/<pod>/<container>.log` of a pod that is no longer running.
fn from_log_dir(state_dir: &Path, pod: &str, container: Option<Container>) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("logs").join(pod);
    let candidates: &[&str] = match container {
        Some(Container::App) => &["app.log"],
        Some(Container::Proxy) => &["proxy.log"],
        None => &["app.log", "proxy.log"],
    };
    candidates.iter().map(|name| dir.join(name)).find(|p| p.is_file()).with_context(|| {
        format!(
            "{pod}: no such pod (paymesh up is not running with {}, and there is no log in {})",
            state_dir.display(),
            dir.display()
        )
    })
}
