//! Shared helpers for the integration tests: start the real `wschat` binary,
//! and talk to it as a raw-byte client whose frame code is independent of
//! the server's.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A `wschat` process listening on a free port, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `wschat --listen 127.0.0.1:0 ARGS...` and waits for it to listen.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_with(&[env!("CARGO_BIN_EXE_wschat")], args)
    }

    /// Like [`start`](Self::start), but runs `command` (a program and its
    /// arguments, ending with the wschat binary to run) followed by `args`.
    pub fn start_with(command: &[&str], args: &[&str]) -> ServerProcess {
        ServerProcess::spawn(command, args, "debug")
    }

    /// Like [`start`](Self::start), logging at `trace`: one line per frame.
    pub fn start_traced(args: &[&str]) -> ServerProcess {
        ServerProcess::spawn(&[env!("CARGO_BIN_EXE_wschat")], args, "trace")
    }

    fn spawn(command: &[&str], args: &[&str], log_level: &str) -> ServerProcess {
        let (program, rest) = command.split_first().expect("a program");
        let mut command = Command::new(program);
        command.args(rest);
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wschat");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ws://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("wschat did not say where it listens");
        ServerProcess {
            child,
            addr: addr.parse().expect("listen address"),
            log,
        }
    }

    /// Every line the server has logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to five seconds for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's thread count, from /proc (Linux).
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("Threads: line")
    }

    /// Waits up to five seconds for the thread count to become `n`.
    pub fn wait_for_threads(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.threads() == n {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the server a signal (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits up to `timeout` for the server to exit; returns its status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A memory figure of the server's from /proc, in KiB: `VmRSS` (resident
    /// now) or `VmHWM` (the most it has been resident).
    pub fn memory_kib(&self, field: &str) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("memory line")
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The URL a WebSocket client connects to.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("WSCHAT_TEST_LOG").is_some() {
            for line in self.log.lock().unwrap().iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// Says that `test` could not run and why. Under CI (`CI=true`), where a
/// skipped test would hide a broken setup, the test fails instead.
///
/// In a test file run by [`run_tests`], the test is then listed as
/// SKIPPED, with the reason, in the summary; elsewhere, the reason goes
/// straight to stderr, where `cargo test` shows it.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run under CI=true: {why}");
    }
    if RUNNER.load(std::sync::atomic::Ordering::SeqCst) {
        *SKIPPED.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
    } else {
        // Straight to the file descriptor: libtest captures `eprintln!`,
        // and would show this only with --nocapture.
        let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {why}");
    }
}

/// Whether [`run_tests`] runs this test file.
static RUNNER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Why the running test skipped, if it did.
static SKIPPED: Mutex<Option<String>> = Mutex::new(None);

/// The test runner of the test files whose tests need something a machine
/// may lack: Chromium, Redis, nginx, root (`harness = false` in
/// Cargo.toml). libtest can only say "ok" or "FAILED", so a test that could
/// not run would pass as "ok"; this runner says SKIPPED and why, on the
/// test's line and in its summary. It runs the tests one after another,
/// each on a thread of its own, takes the same name filters as libtest
/// (`cargo test --test browser two_tabs`), and exits with 101 if one fails.
pub fn run_tests(tests: &[(&str, fn())]) -> std::process::ExitCode {
    RUNNER.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--skip" => skips.extend(args.next()),
            // libtest's options that take a value: the value is not a filter.
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let chosen: Vec<&(&str, fn())> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return std::process::ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", chosen.len());
    let started = Instant::now();
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), Vec::new());
    for (name, test) in chosen {
        *SKIPPED.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let outcome = thread::Builder::new()
            .name(name.to_string())
            .spawn(*test)
            .expect("a thread for the test")
            .join();
        let why = SKIPPED.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (outcome, why) {
            (Err(_), _) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
            (Ok(()), Some(why)) => {
                println!("test {name} ... SKIPPED: {why}");
                skipped.push((*name, why));
            }
            (Ok(()), None) => {
                println!("test {name} ... ok");
                passed += 1;
            }
        }
    }
    if !skipped.is_empty() {
        println!("\nskipped (under CI=true they fail instead; .ci/run installs what they need):");
        for (name, why) in &skipped {
            println!("    {name}: {why}");
        }
    }
    if !failed.is_empty() {
        println!("\nfailures (the panic messages are above):");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {} skipped; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        skipped.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(101)
    }
}

/// The RFC's sample key; its accept value is known.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid opening request for `addr`, with extra header lines.
pub fn upgrade_request(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Connects with a five-second read timeout, so a test fails instead of hanging.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends `request` and reads the response head (and, if it has a
/// Content-Length, the body). Returns the head and body as text.
pub fn http_exchange(stream: &mut TcpStream, request: &[u8]) -> (String, String) {
    stream.write_all(request).unwrap();
    read_http_response(stream)
}

/// Reads one HTTP response byte by byte, so nothing after it is consumed.
pub fn read_http_response(stream: &mut TcpStream) -> (String, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "response ended early ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// The status code of an HTTP response head (0 if there is none).
pub fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a connection and completes the handshake by hand.
pub fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    let (head, _) = http_exchange(&mut stream, upgrade_request("").as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains(SAMPLE_ACCEPT), "{head}");
    stream
}

/// A client frame, masked with a fixed key unless `masked` is false.
/// Written here from the RFC, independently of the server's encoder.
pub fn client_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first_byte];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// First-byte values: FIN bit plus opcode.
pub const TEXT: u8 = 0x81;
pub const BINARY: u8 = 0x82;
pub const TEXT_START: u8 = 0x01;
pub const BINARY_START: u8 = 0x02;
pub const CONT: u8 = 0x00;
pub const CONT_FIN: u8 = 0x80;
pub const CLOSE: u8 = 0x88;
pub const PING: u8 = 0x89;
pub const PONG: u8 = 0x8A;

/// A frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub first_byte: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code in a close frame's payload.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.first_byte, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one server frame; server frames must be unmasked and use the
/// shortest length form.
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<ServerFrame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            let n = u16::from_be_bytes(b) as usize;
            assert!(n >= 126, "16-bit length {n} is not the shortest form");
            n
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            let n = u64::from_be_bytes(b) as usize;
            assert!(n > 65535, "64-bit length {n} is not the shortest form");
            n
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok(ServerFrame {
        first_byte: head[0],
        payload,
    })
}

/// Reads frames until a close frame and returns its code; then checks the
/// server closes the TCP connection.
pub fn expect_close(stream: &mut TcpStream) -> Option<u16> {
    loop {
        let frame = read_frame(stream).expect("a close frame");
        if frame.first_byte == CLOSE {
            let code = frame.close_code();
            expect_tcp_closed(stream);
            return code;
        }
    }
}

/// A well-behaved client says something and hears itself back.
pub fn chats(stream: &mut TcpStream, text: &str) {
    stream
        .write_all(&client_frame(TEXT, text.as_bytes(), true))
        .unwrap();
    let frame = read_frame(stream).expect("the echo or broadcast");
    let got = String::from_utf8(frame.payload).unwrap();
    assert!(got.ends_with(text), "{got:?}");
}

/// Asserts that the server has closed the connection (EOF or reset).
pub fn expect_tcp_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the connection closed, got {n} more bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected the connection closed, got {e}"),
    }
}

// ---------------------------------------------------------------------------
// Servers written by hand, to test the client (`wschat connect`).
// ---------------------------------------------------------------------------

/// A server written by hand for one test: it reads the request, hands the
/// socket and the client's key to `answer`, and returns what `answer`
/// returns.
pub fn raw_server<T: Send + 'static>(
    answer: impl FnOnce(TcpStream, String) -> T + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key")
            .to_string();
        answer(stream, key)
    });
    (addr, handle)
}

/// A correct 101 for `key`, with `extra` header lines.
pub fn switching(key: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_for(key)
    )
}

/// RFC 6455 §4.2.2's accept value for `key`, computed here from the RFC
/// rather than by the code under test.
pub fn accept_for(key: &str) -> String {
    use base64::Engine;
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

// ---------------------------------------------------------------------------
// A real Redis, for `--redis`.
// ---------------------------------------------------------------------------

/// A `redis-server` of the test's own, on a free port, with persistence
/// off; killed by its PID when dropped.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl RedisProcess {
    /// Starts one, or says SKIPPED (and fails under CI) if there is no
    /// `redis-server` on this machine. `extra` are more `redis-server`
    /// options, such as `["--client-output-buffer-limit", "pubsub 1mb 0 0"]`.
    pub fn start(test: &str, extra: &[&str]) -> Option<RedisProcess> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            skip(
                test,
                "no redis-server on PATH; `apt-get install redis-server` runs it",
            );
            return None;
        }
        let port = own_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut redis = RedisProcess {
            child: None,
            port,
            args,
        };
        redis.restart();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends it a signal (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-s", name, &child.id().to_string()])
                .status();
        }
    }

    /// Kills it at once (SIGKILL): Redis gone, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on now (bound, then freed).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A free port that the OS will not hand to anyone else while it is free
/// again: below Linux's ephemeral range (32768 and up), and different for
/// every call in this test process. A test that kills its Redis and starts
/// it again on the same port must not find another test's Redis there.
pub fn own_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 600) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % 20;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
