//! paymesh-echo as a real process on a random loopback address, driven with curl.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The running echo; killed on drop.
struct Echo {
    child: Child,
    addr: String,
    ip: Ipv4Addr,
    /// Kept open: the echo prints more lines after the first, and a closed pipe would fail them.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_ip() -> Ipv4Addr {
    Ipv4Addr::new(127, fastrand::u8(1..=254), fastrand::u8(0..=255), fastrand::u8(2..=254))
}

fn start(extra: &[&str]) -> Echo {
    let ip = random_ip();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paymesh-echo"))
        .args(["--ip", &ip.to_string(), "--port", "0", "--pod", "echo-1", "--namespace", "test"])
        .args(extra)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn paymesh-echo");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the listening line");
    let addr = line.trim().strip_prefix("paymesh-echo listening on ").expect("listening line").to_owned();
    Echo { child, addr, ip, _stdout: stdout }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "10"]).args(args).output().expect("run curl");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn echo_reports_pod_request_and_body() {
    let echo = start(&[]);
    let out = curl(&["-d", "hello", "-H", "x-test: 1", &format!("http://{}/echo?a=b", echo.addr)]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["pod"], "echo-1");
    assert_eq!(json["namespace"], "test");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/echo");
    assert_eq!(json["query"], "a=b");
    assert_eq!(json["body"], "hello");
    assert_eq!(json["headers"]["x-test"][0], "1");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(curl(&[&format!("http://{}/health", echo.addr)]), "ok\n");
}

#[test]
fn h2c_status_and_streaming_trailer() {
    let echo = start(&[]);
    let code = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &format!("http://{}/status/418", echo.addr),
    ]);
    assert_eq!(code, "418 2");
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/status/99", echo.addr)]),
        "400"
    );
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/status/x", echo.addr)]),
        "400"
    );
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/nope", echo.addr)]),
        "404"
    );
    let out = Command::new("curl")
        .args(["-s", "-v", "--http2-prior-knowledge", "--data-binary", "chunk-of-bytes"])
        .arg(format!("http://{}/stream", echo.addr))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "chunk-of-bytes");
    assert!(String::from_utf8_lossy(&out.stderr).contains("< grpc-status: 0"), "no trailer");
}

#[test]
fn oversized_echo_body_is_refused() {
    let echo = start(&[]);
    let big = "x".repeat(1024 * 1024 + 1);
    let path = std::env::temp_dir().join(format!("paymesh-echo-big-{}", std::process::id()));
    std::fs::write(&path, big).expect("write");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &format!("@{}", path.display()),
        &format!("http://{}/echo", echo.addr),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, "413");
}

#[test]
fn call_reaches_another_server_and_reports_its_status() {
    let target = start(&[]);
    let caller = start(&[]);
    let url = format!("http%3A%2F%2F{}%2Fstatus%2F503", target.addr);
    let out = curl(&["-i", &format!("http://{}/call?url={url}", caller.addr)]);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("x-echo-upstream-status: 503"), "{out}");
    let refused = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/call?url=http%3A%2F%2F{}%3A1%2F", caller.addr, caller.ip),
    ]);
    assert_eq!(refused, "502");
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/call", caller.addr)]),
        "400"
    );
}

#[test]
fn tcp_echo_returns_the_bytes() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let echo = start(&["--tcp-port", &port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect((echo.ip, port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("tcp echo never listened: {e}"),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
}

#[test]
fn sigterm_exits_zero_and_crash_after_exits_one() {
    let mut echo = start(&[]);
    kill(Pid::from_raw(echo.child.id() as i32), Signal::SIGTERM).expect("signal");
    assert_eq!(wait(&mut echo.child).code(), Some(0));

    let mut crasher = start(&["--crash-after", "1"]);
    assert_eq!(wait(&mut crasher.child).code(), Some(1));
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn grpc_unary_and_bidirectional_chat_answer_in_order() {
    use paymesh_echo::proto::EchoMessage;
    use paymesh_echo::proto::echo_client::EchoClient;
    use tokio_stream::StreamExt as _;

    let echo = start(&["--grpc-port", "9191"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}:9191", echo.ip))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = EchoClient::new(channel);
        let message = |seq| EchoMessage { seq, payload: format!("m{seq}"), pod: String::new() };
        let answer = client.unary(message(7)).await.expect("unary").into_inner();
        assert_eq!(answer, EchoMessage { seq: 7, payload: "m7".into(), pod: "echo-1".into() });

        let requests = tokio_stream::iter((1..=3).map(message));
        let answers: Vec<EchoMessage> = client
            .chat(requests)
            .await
            .expect("chat")
            .into_inner()
            .collect::<Result<_, _>>()
            .await
            .expect("every answer");
        let seqs: Vec<(u64, &str, &str)> =
            answers.iter().map(|a| (a.seq, a.payload.as_str(), a.pod.as_str())).collect();
        assert_eq!(seqs, [(1, "m1", "echo-1"), (2, "m2", "echo-1"), (3, "m3", "echo-1")]);
    });
}
