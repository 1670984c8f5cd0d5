//! `paymesh exec`: run a command as if inside a pod, with the pod's environment (`POD_IP`,
//! `POD_NAME`, ..., and `HTTP_PROXY`/`http_proxy` pointing at its sidecar), so
//! `paymesh exec -n payments deploy/payment-service -- curl -s account-service:8083/health`
//! goes through the mesh as the pod's own requests do.
//!
//! The command's exit status is paymesh's (128 + N when it died of signal N; 127 when it could
//! not be started, as shells answer).

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use crate::state::{DEFAULT_STATE_DIR, State};

/// The shell's status for a command that cannot be run.
const EXIT_CANNOT_RUN: u8 = 127;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pod name, or `deploy/NAME` for a Deployment's first pod.
    target: String,
    /// Only look in this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The state directory of `paymesh up`.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = State::read(&args.state_dir)?;
    let pod = state.find_pod(&args.target, args.namespace.as_deref())?;
    let Some((program, rest)) = args.command.split_first() else {
        anyhow::bail!("no command given after --");
    };
    let mut command = Command::new(program);
    command.args(rest);
    // The pod's proxy settings replace the caller's; a pod without a sidecar has none.
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command.envs(&pod.env);
    let status = match command.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: running {program} in {}: {e}", pod.qualified_name());
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
    };
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    };
    Ok(ExitCode::from(code))
}
