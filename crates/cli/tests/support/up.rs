//! Shared by the `paymesh up` tests: a random /24 per test, the echo workload built on demand,
//! `paymesh up` as a child process whose stdout lines are collected, and waits with deadlines.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn paymesh() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paymesh"));
    for var in ["HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "PAYMESH_BIN_DIR"] {
        command.env_remove(var);
    }
    command
}

/// The directory holding `paymesh` (and the workspace's other binaries).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_paymesh")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Builds the workspace binaries the supervisor starts (`paymesh-echo`, and for meshed pods
/// `paymesh-control` and `paymesh-proxy`) beside `paymesh`, once per test binary: `cargo test
/// -p paymesh-cli` does not build other packages' binaries (a workspace run already has them).
pub fn ensure_bins() {
    const PACKAGES: [&str; 3] = ["paymesh-echo", "paymesh-control", "paymesh-proxy"];
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if PACKAGES.iter().all(|bin| bin_dir().join(bin).is_file()) {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q"]).current_dir(paymesh_test_util::workspace_root());
        for package in PACKAGES {
            build.args(["-p", package]);
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of {PACKAGES:?} failed");
        for bin in PACKAGES {
            assert!(bin_dir().join(bin).is_file(), "{bin} is not beside paymesh");
        }
    });
}

/// A /24 nobody else uses: 127.X.Y.0 with random X, Y (X ≠ 0, so never the default 127.0.10).
pub fn random_base() -> Ipv4Addr {
    static TAKEN: Mutex<Vec<(u8, u8)>> = Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let pick = (fastrand::u8(1..=254), fastrand::u8(0..=255));
        if !taken.contains(&pick) {
            taken.push(pick);
            return Ipv4Addr::new(127, pick.0, pick.1, 0);
        }
    }
}

/// The `.N` address of `base`'s /24.
pub fn host(base: Ipv4Addr, n: u8) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, n)
}

/// A running `paymesh up`; SIGKILLed (and everything in its state killed) on drop.
pub struct Up {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
    pub state_dir: PathBuf,
}

impl Up {
    pub fn start(files: &[&Path], state_dir: &Path, base: Ipv4Addr, extra: &[&str]) -> Up {
        let mut command = paymesh();
        command.arg("up");
        for file in files {
            command.arg("-f").arg(file);
        }
        command
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--ip-base", &base.to_string(), "--ingress-addr", &host(base, 1).to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn paymesh up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up { child, lines, seen: Vec::new(), state_dir: state_dir.to_owned() }
    }

    /// Waits for a stdout line containing `needle`; panics with everything seen after `deadline`.
    pub fn wait_line(&mut self, needle: &str, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no line containing {needle:?} within {deadline:?}; stdout so far:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    pub fn state(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.state_dir.join("run/state.json")).expect("state.json");
        serde_json::from_slice(&bytes).expect("state.json is JSON")
    }

    /// Every PID state.json records (supervisor, control plane, apps, proxies).
    pub fn pids(&self) -> Vec<i32> {
        pids_of(&self.state())
    }

    /// SIGINT, then the exit status within `deadline`.
    pub fn interrupt(&mut self, deadline: Duration) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("SIGINT");
        wait_exit(&mut self.child, deadline)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(bytes) = std::fs::read(self.state_dir.join("run/state.json"))
            && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            for pid in pids_of(&state) {
                let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn pids_of(state: &serde_json::Value) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut push = |v: &serde_json::Value| {
        if let Some(pid) = v.as_i64() {
            pids.push(pid as i32);
        }
    };
    push(&state["supervisorPid"]);
    push(&state["control"]["process"]["pid"]);
    for pod in state["pods"].as_array().into_iter().flatten() {
        push(&pod["app"]["pid"]);
        push(&pod["proxy"]["pid"]);
    }
    pids
}

pub fn alive(pid: i32) -> bool {
    // A zombie still answers signal 0; /proc tells a zombie apart.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn wait_exit(child: &mut Child, deadline: Duration) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < until, "process {} did not exit within {deadline:?}", child.id());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Deployment of `replicas` paymesh-echo pods on `port` (extra args after the program).
pub fn echo_deployment(name: &str, namespace: &str, replicas: u32, port: u16, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: {name}
        image: paymesh-echo
        command: [\"paymesh-echo\"]
        args: [{}]
        env:
        - {{name: PORT, value: \"{port}\"}}
        ports:
        - containerPort: {port}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector: {{app: {name}}}
  ports:
  - name: http
    port: {port}
---
",
        args.join(", ")
    )
}

/// PIDs of live processes (not zombies) whose command line mentions `needle` (e.g. a test's
/// state dir), read from /proc; the test process itself is left out.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pid != me && cmdline.contains(needle) && alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Builds the `payments` binary (the reference services) beside `paymesh`, once.
pub fn ensure_payments_bin() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if bin_dir().join("payments").is_file() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "paymesh-payments"])
            .current_dir(paymesh_test_util::workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p paymesh-payments failed");
        assert!(bin_dir().join("payments").is_file(), "payments is not beside paymesh");
    });
}
