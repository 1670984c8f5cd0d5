//! The real processes the bench measures: `paymesh-control` (and one `paymesh-proxy`),
//! started with their stdout piped until their ready line, killed by PID when dropped, and
//! their resident memory read from `/proc/<pid>/status`.
//!
//! Also the control plane's HTTP side the bench needs: bootstrap tokens and the accepted
//! version from `/debug/configz`.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use paymesh_api::ca::BootstrapToken;
use serde_json::{Value, json};

use crate::generate::{Mesh, PodRef};

/// The admin secret the bench's control plane is started with.
pub const ADMIN: &str = "bench-admin-secret";

/// How long a process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A child process killed (SIGKILL, by PID) and reaped on drop.
pub struct Guard(Child);

impl Guard {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading /proc/<pid>/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: u64 = 100;

impl Guard {
    /// CPU time used so far, user + system (`/proc/<pid>/stat`, 10 ms resolution).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .context("reading /proc/<pid>/stat")?;
        // Fields after the command name (which may hold spaces): state is the first, utime
        // the 12th and stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("no command name in stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks =
            |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).context("no CPU times in stat");
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (on a thread, with a deadline) for a stdout line starting with `prefix`; returns it.
fn ready_line(child: &mut Child, prefix: &'static str) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("stdout not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with(prefix) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    rx.recv_timeout(READY_TIMEOUT).with_context(|| format!("no {prefix:?} line within {READY_TIMEOUT:?}"))
}

/// A running control plane.
pub struct Control {
    /// The process.
    pub process: Guard,
    /// TLS gRPC (CA + discovery).
    pub grpc: SocketAddr,
    /// Monitoring HTTP.
    pub monitoring: SocketAddr,
    /// The mesh trust bundle.
    pub root_cert: PathBuf,
}

impl Control {
    /// Starts `binary` for `mesh` on `ip` (ephemeral ports), state under `root`.
    pub fn start(binary: &Path, mesh: &Mesh, root: &Path, ip: Ipv4Addr) -> anyhow::Result<Self> {
        let token_file = root.join("admin-token");
        std::fs::write(&token_file, ADMIN).context("writing the admin token")?;
        let log = std::fs::File::create(root.join("control.log")).context("control log")?;
        let mut child = Command::new(binary)
            .arg("-f")
            .arg(&mesh.config_dir)
            .arg("--pods")
            .arg(&mesh.pods_file)
            .arg("--ca-dir")
            .arg(root.join("ca"))
            .args(["--grpc-addr", &format!("{ip}:0"), "--monitoring-addr", &format!("{ip}:0")])
            .arg("--admin-token-file")
            .arg(&token_file)
            .arg("--credentials-dir")
            .arg(root.join("credentials"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let line = ready_line(&mut child, "paymesh-control ready");
        let process = Guard(child);
        let line = line?;
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .context("ready line without the address")?
                .parse()
                .context("ready line address")
        };
        Ok(Control {
            grpc: addr("grpc=")?,
            monitoring: addr("monitoring=")?,
            root_cert: root.join("ca/root-cert.pem"),
            process,
        })
    }

    /// The accepted version (`/debug/configz`).
    pub async fn version(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        let answer: Value =
            http.get(format!("http://{}/debug/configz", self.monitoring)).send().await?.json().await?;
        answer["version"].as_str().map(str::to_owned).context("configz without a version")
    }
}

/// A bootstrap token for `pod` from the control plane at `monitoring`.
pub async fn token(
    http: &reqwest::Client,
    monitoring: SocketAddr,
    pod: &PodRef,
) -> anyhow::Result<BootstrapToken> {
    let answer: Value = http
        .post(format!("http://{monitoring}/debug/bootstrap-token"))
        .bearer_auth(ADMIN)
        .json(&json!({"namespace": pod.namespace, "serviceAccount": pod.service_account, "pod": pod.name}))
        .send()
        .await
        .context("bootstrap token request")?
        .json()
        .await
        .context("bootstrap token answer")?;
    let token = answer["token"].as_str().with_context(|| format!("no token: {answer}"))?;
    Ok(BootstrapToken::new(token.to_owned()))
}

/// Starts one real `paymesh-proxy` for `pod`; returns once it prints its ready line.
pub fn start_proxy(
    binary: &Path,
    control: &Control,
    pod: &PodRef,
    token: &BootstrapToken,
    root: &Path,
) -> anyhow::Result<Guard> {
    let token_file = root.join("proxy-token");
    std::fs::write(&token_file, token.expose()).context("writing the proxy's token")?;
    let log = std::fs::File::create(root.join("proxy.log")).context("proxy log")?;
    let mut child = Command::new(binary)
        .args(["--mode", "sidecar", "--pod", &pod.name, "--namespace", &pod.namespace])
        .args(["--service-account", &pod.service_account, "--ip", &pod.ip.to_string()])
        .args(["--control", &control.grpc.to_string()])
        .arg("--root-cert")
        .arg(&control.root_cert)
        .arg("--token-file")
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let line = ready_line(&mut child, "paymesh-proxy ready");
    let guard = Guard(child);
    line?;
    Ok(guard)
}
