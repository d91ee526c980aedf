//! Starting the servers as child processes, and reading their memory,
//! threads and CPU time from /proc.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Wschat,
    Tungstenite,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Wschat => "wschat",
            Impl::Tungstenite => "tungstenite",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Echo,
    Chat,
    /// The chat, and for tungstenite the writer-thread design (see reference.rs).
    ChatThreads,
}

/// A server running as a child process; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

/// Where the servers' logs go: `target/bench-logs/`.
pub fn log_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/release/deps/compare-HASH -> target/
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_default();
    let dir = target.join("bench-logs");
    let _ = fs::create_dir_all(&dir);
    dir
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

impl Server {
    /// Starts `which` serving `service` on a free port, and waits until it accepts.
    pub fn start(which: Impl, service: Service, max_message: usize) -> Server {
        Server::start_with(which, service, max_message, &[])
    }

    /// [`Server::start`] with more command-line arguments (wschat only).
    pub fn start_with(
        which: Impl,
        service: Service,
        max_message: usize,
        extra: &[String],
    ) -> Server {
        let addr = free_port();
        let max = max_message.to_string();
        let mut command = match which {
            Impl::Wschat => {
                // WSCHAT_BIN runs another build of wschat, to compare two versions.
                let bin = std::env::var_os("WSCHAT_BIN")
                    .unwrap_or_else(|| env!("CARGO_BIN_EXE_wschat").into());
                let mut c = Command::new(bin);
                c.args(["--listen", &addr.to_string(), "--max-message", &max]);
                // The default limit is 10,000 connections: room for the idle test's
                // 10,000 and the readiness probe.
                c.args(["--max-clients", "20000"]);
                if service == Service::Echo {
                    c.arg("--echo");
                }
                c.args(extra);
                c
            }
            Impl::Tungstenite => {
                let mut c = Command::new(std::env::current_exe().expect("current_exe"));
                let kind = match service {
                    Service::Echo => "tungstenite-echo",
                    Service::Chat => "tungstenite-chat",
                    Service::ChatThreads => "tungstenite-chat-threads",
                };
                c.args([
                    "--serve",
                    kind,
                    "--listen",
                    &addr.to_string(),
                    "--max-message",
                    &max,
                ]);
                c
            }
        };
        let log = log_dir()
            .join(format!("{}-{:?}-{}.log", which.name(), service, addr.port()).to_lowercase());
        let log = File::create(log).expect("create log file");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = command.spawn().expect("start server");
        let pid = child.id();
        let server = Server { child, addr, pid };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", which.name());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the probe connection's thread finish before anything is measured.
        std::thread::sleep(Duration::from_millis(100));
        server
    }

    /// Resident memory in KiB and number of threads, from /proc/PID/status.
    pub fn status(&self) -> (u64, u64) {
        status(self.pid)
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Minor page faults of a process so far: each is a page of memory touched
/// for the first time.
pub fn page_faults(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Field 10 of /proc/PID/stat, the 8th after the command name.
    after
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process (`self` for this one), in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; count from after it.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks() as f64
}

fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Nanoseconds since the first call: the clock every timestamp uses.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The machine, for the report: CPUs, model, kernel.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, {model}, Linux {}", kernel.trim())
}

/// The soft limit on open files of this process.
pub fn open_file_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

/// A `redis-server` of the benchmark's own, persistence off; killed when
/// dropped. `None` if there is none on this machine.
pub struct Redis {
    child: Child,
    pub addr: SocketAddr,
}

impl Redis {
    pub fn start() -> Option<Redis> {
        let addr = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &addr.port().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
