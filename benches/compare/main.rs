//! `cargo bench --bench compare`: wschat measured side by side with
//! tungstenite, in one run, on one machine. See docs/performance.md.
//!
//!     cargo bench --bench compare                   # every scenario
//!     cargo bench --bench compare -- echo fanout    # some of them
//!     cargo bench --bench compare -- --help         # the options
//!
//! Scenarios: `codec` (unmasking and decoding, no sockets), `echo`,
//! `echo-w1`, `large`, `fanout`, `fanout-w1`, `fanout-stuck`, `idle` and `redis`. Every load scenario
//! starts a fresh server process for each run, alternates wschat and
//! tungstenite round by round, and reports the median of the rounds.
//!
//! Modules: `client` is the load generator's minimal WebSocket client,
//! `load` the load scenarios, `codec` the micro-benchmarks, `procs` the
//! child processes and /proc, `reference` the tungstenite servers.

mod client;
mod codec;
mod load;
mod procs;
mod reference;

use procs::{Impl, Server, Service};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
usage: cargo bench --bench compare -- [SCENARIO...] [OPTIONS]

scenarios (default: all): codec echo echo-w1 large fanout fanout-w1 fanout-stuck idle redis
  (echo-w1 and fanout-w1 are echo and fanout with one message in flight at a
  time, a quarter as many messages: no bursts for either server to batch;
  fanout-stuck is fanout while 100 more clients never read; redis is wschat
  against itself: fan-out to 900 clients on one process, and to 3 x 300 on
  three processes sharing the room through Redis, which it needs)

options:
  --rounds N             rounds per load scenario, alternating servers (default 5; idle 1)
  --servers LIST         wschat,tungstenite (default both)
  --quick                fewer messages and rounds, for a quick look
  --echo-clients N       default 8
  --echo-messages N      messages per echo client (default 40000)
  --echo-window N        messages in flight per echo client (default 16)
  --large-bytes N        size of the large message (default 16777216)
  --fanout-clients N     default 1000
  --fanout-messages N    messages from the one sender (default 1000)
  --fanout-window N      messages not yet delivered to all (default 16)
  --stuck-clients N      clients that never read, in fanout-stuck (default 100)
  --idle-clients N       default 10000
  --redis-clients N      clients in the redis scenario, in all (default 900)
  --tungstenite-chat lock|threads
                         the tungstenite chat design for fanout (default lock,
                         a shared writer; threads: a writer thread per client)

WSCHAT_BIN=PATH puts another build of wschat in the wschat column.
The reference servers run on their own as `compare --serve KIND --listen ADDR
--max-message BYTES`, KIND one of tungstenite-echo, tungstenite-chat,
tungstenite-chat-threads.
";

/// One line of the results table.
pub struct Row {
    pub name: String,
    pub wschat: f64,
    pub tungstenite: f64,
    pub higher_is_better: bool,
}

impl Row {
    pub fn new(
        name: impl Into<String>,
        wschat: f64,
        tungstenite: f64,
        higher_is_better: bool,
    ) -> Row {
        Row {
            name: name.into(),
            wschat,
            tungstenite,
            higher_is_better,
        }
    }
}

struct Options {
    scenarios: Vec<String>,
    servers: Vec<Impl>,
    rounds: Option<usize>,
    quick: bool,
    echo_clients: usize,
    echo_messages: u64,
    echo_window: u64,
    large_bytes: usize,
    fanout_clients: usize,
    fanout_messages: u64,
    fanout_window: u64,
    stuck_clients: usize,
    idle_clients: usize,
    /// Fan-out against tungstenite's writer-thread chat instead of the shared writer.
    chat_threads: bool,
    /// Clients in the `redis` scenario, in all (a third on each process).
    redis_clients: usize,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        scenarios: Vec::new(),
        servers: vec![Impl::Wschat, Impl::Tungstenite],
        rounds: None,
        quick: false,
        echo_clients: 8,
        echo_messages: 40_000,
        echo_window: 16,
        large_bytes: 16 << 20,
        fanout_clients: 1000,
        fanout_messages: 1000,
        fanout_window: 16,
        stuck_clients: 100,
        idle_clients: 10_000,
        chat_threads: false,
        redis_clients: 900,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value"))
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("{arg} {v}: {e}")))
        };
        match arg.as_str() {
            // `cargo bench` passes --bench to every benchmark binary.
            "--bench" => {}
            "--help" | "-h" => return Err(String::new()),
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = Some(value()? as usize),
            "--echo-clients" => o.echo_clients = value()? as usize,
            "--echo-messages" => o.echo_messages = value()?,
            "--echo-window" => o.echo_window = value()?,
            "--large-bytes" => o.large_bytes = value()? as usize,
            "--fanout-clients" => o.fanout_clients = value()? as usize,
            "--fanout-messages" => o.fanout_messages = value()?,
            "--fanout-window" => o.fanout_window = value()?,
            "--idle-clients" => o.idle_clients = value()? as usize,
            "--stuck-clients" => o.stuck_clients = value()? as usize,
            "--tungstenite-chat" => match it.next().map(String::as_str) {
                Some("lock") => o.chat_threads = false,
                Some("threads") => o.chat_threads = true,
                _ => return Err("--tungstenite-chat needs lock or threads".into()),
            },
            "--servers" => {
                let list = it.next().ok_or("--servers needs a value")?;
                o.servers = list
                    .split(',')
                    .map(|s| match s {
                        "wschat" => Ok(Impl::Wschat),
                        "tungstenite" => Ok(Impl::Tungstenite),
                        _ => Err(format!("unknown server {s}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "codec" | "echo" | "echo-w1" | "large" | "fanout" | "fanout-w1" | "fanout-stuck"
            | "idle" | "redis" => o.scenarios.push(arg.clone()),
            "--redis-clients" => o.redis_clients = value()? as usize,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = [
            "codec",
            "echo",
            "echo-w1",
            "large",
            "fanout",
            "fanout-w1",
            "fanout-stuck",
            "idle",
            "redis",
        ]
        .map(String::from)
        .to_vec();
    }
    if o.quick {
        o.echo_messages = o.echo_messages.min(5_000);
        o.fanout_messages = o.fanout_messages.min(200);
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve") {
        return serve_reference(&args);
    }
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprint!("compare: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    println!("machine: {}", procs::machine());
    println!("the load generator runs in this process, on the same CPUs as the server it measures");
    let mut tables = Vec::new();
    for scenario in &options.scenarios {
        println!("\n== {scenario} ==");
        let (rows, columns) = match scenario.as_str() {
            "codec" => (codec::run(options.quick), SERVERS),
            "redis" => (run_redis(&options), REDIS_COLUMNS),
            other => (run_load(other, &options), SERVERS),
        };
        print_table(&rows, columns);
        tables.push((scenario.clone(), rows, columns));
    }
    println!("\n== summary ==");
    for (scenario, rows, columns) in &tables {
        println!("\n{scenario}:");
        print_table(rows, *columns);
    }
}

/// `compare --serve KIND --listen ADDR --max-message BYTES`.
fn serve_reference(args: &[String]) {
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("--serve needs {flag}"))
    };
    let kind = get("--serve");
    let listen: SocketAddr = get("--listen").parse().expect("--listen ADDR");
    let max_message = get("--max-message").parse().expect("--max-message BYTES");
    if let Err(e) = reference::serve(kind, listen, max_message) {
        eprintln!("{kind}: {e}");
        std::process::exit(1);
    }
}

/// Runs one load scenario for a number of rounds, alternating the servers
/// (wschat first in even rounds, tungstenite first in odd ones), and
/// returns the median of each figure.
fn run_load(scenario: &str, o: &Options) -> Vec<Row> {
    let default_rounds = match scenario {
        "idle" => 1,
        _ if o.quick => 2,
        _ => 5,
    };
    let rounds = o.rounds.unwrap_or(default_rounds);
    let max_message = if scenario == "large" {
        o.large_bytes.max(1 << 20)
    } else {
        1 << 20
    };
    let fanout = scenario.starts_with("fanout");
    let service = if fanout && o.chat_threads {
        Service::ChatThreads
    } else if fanout {
        Service::Chat
    } else {
        Service::Echo
    };
    if scenario == "idle" {
        let needed = o.idle_clients as u64 + 100;
        if procs::open_file_limit() < needed {
            println!("skipped: needs {needed} open files; run `ulimit -n 20000` first");
            return Vec::new();
        }
    }
    let large_frame = (scenario == "large").then(|| {
        let payload: Vec<u8> = (0..o.large_bytes).map(|i| (i % 251) as u8).collect();
        let mut frame = Vec::with_capacity(o.large_bytes + 14);
        client::encode(client::BINARY, &payload, &mut frame);
        Arc::new(frame)
    });
    let mut results: BTreeMap<&'static str, Vec<Vec<load::Metric>>> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = o.servers.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for which in order {
            let server = Server::start(which, service, max_message);
            let outcome = match scenario {
                "echo" => load::echo(&server, o.echo_clients, o.echo_messages, o.echo_window),
                "echo-w1" => load::echo(&server, o.echo_clients, o.echo_messages / 4, 1),
                "large" => load::large(
                    &server,
                    large_frame.as_ref().expect("frame"),
                    o.large_bytes,
                    3,
                ),
                "fanout" => load::fanout(
                    &server,
                    o.fanout_clients,
                    o.fanout_messages,
                    o.fanout_window,
                ),
                "fanout-w1" => load::fanout(&server, o.fanout_clients, o.fanout_messages / 4, 1),
                "fanout-stuck" => load::fanout_with_stuck(
                    &server,
                    o.fanout_clients,
                    o.stuck_clients,
                    o.fanout_messages,
                    o.fanout_window,
                ),
                "idle" => load::idle(&server, o.idle_clients),
                _ => unreachable!(),
            };
            drop(server);
            if let Some(metrics) = report_round(round, which.name(), outcome) {
                results.entry(which.name()).or_default().push(metrics);
            }
            // Let the killed server's sockets and threads go before the next.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let runs = |which: &str| results.get(which).map(Vec::as_slice).unwrap_or(&[]);
    rows_of_medians(runs("wschat"), runs("tungstenite"))
}

/// Prints one round's first figures, or why it failed; returns its figures.
fn report_round(
    round: usize,
    name: &str,
    outcome: std::io::Result<Vec<load::Metric>>,
) -> Option<Vec<load::Metric>> {
    match outcome {
        Ok(metrics) => {
            let line: Vec<String> = metrics
                .iter()
                .take(3)
                .map(|(name, value, _)| format!("{name} {}", fmt(*value)))
                .collect();
            println!("round {} {name:<11} {}", round + 1, line.join(", "));
            Some(metrics)
        }
        Err(e) => {
            println!("round {} {name:<11} FAILED: {e}", round + 1);
            None
        }
    }
}

/// One row per figure: the median over the rounds, for each column.
fn rows_of_medians(first: &[Vec<load::Metric>], second: &[Vec<load::Metric>]) -> Vec<Row> {
    let median = |runs: &[Vec<load::Metric>], name: &str| -> f64 {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|run| run.iter().find(|m| m.0 == name).map(|m| m.1))
            .collect();
        if values.is_empty() {
            return f64::NAN;
        }
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let names: Vec<(String, bool)> = first
        .first()
        .or(second.first())
        .map(|run| run.iter().map(|m| (m.0.clone(), m.2)).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|(name, higher)| {
            let (a, b) = (median(first, &name), median(second, &name));
            Row::new(name, a, b, higher)
        })
        .collect()
}

fn fmt(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A table's two columns of figures.
type Columns = (&'static str, &'static str);
const SERVERS: Columns = ("wschat", "tungstenite");
/// The `redis` scenario compares wschat with itself: the first column is one
/// process, the second three sharing a room through Redis.
const REDIS_COLUMNS: Columns = ("1 process", "3 + Redis");

/// `redis`: 900 clients on one wschat against 300 on each of three wschat
/// processes sharing the room through one Redis, the one sender on the
/// first; each round starts fresh processes, one layout then the other.
fn run_redis(o: &Options) -> Vec<Row> {
    let rounds = o.rounds.unwrap_or(if o.quick { 2 } else { 5 });
    let clients = o.redis_clients;
    let mut one = Vec::new();
    let mut three = Vec::new();
    for round in 0..rounds {
        let Some(redis) = procs::Redis::start() else {
            println!("skipped: no redis-server (apt-get install redis-server)");
            return Vec::new();
        };
        let url = vec!["--redis".to_string(), format!("redis://{}", redis.addr)];
        let single = || {
            let server = Server::start(Impl::Wschat, Service::Chat, 1 << 20);
            load::fanout_across(&[&server], &[], clients, o.fanout_messages, o.fanout_window)
        };
        let shared = || {
            let servers: Vec<Server> = (0..3)
                .map(|_| Server::start_with(Impl::Wschat, Service::Chat, 1 << 20, &url))
                .collect();
            let refs: Vec<&Server> = servers.iter().collect();
            load::fanout_across(
                &refs,
                &[redis.pid()],
                clients / 3,
                o.fanout_messages,
                o.fanout_window,
            )
        };
        let layouts = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for across in layouts {
            let (name, outcome, into) = if across {
                ("3 + Redis", shared(), &mut three)
            } else {
                ("1 process", single(), &mut one)
            };
            if let Some(metrics) = report_round(round, name, outcome) {
                into.push(metrics);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    rows_of_medians(&one, &three)
}

fn print_table(rows: &[Row], columns: Columns) {
    if rows.is_empty() {
        return;
    }
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "{:<width$}  {:>12}  {:>12}  {:>8}",
        "", columns.0, columns.1, "ratio"
    );
    for row in rows {
        // The ratio is always "how many times better wschat is": above 1
        // means wschat is ahead, whichever way the figure counts.
        let ratio = if row.higher_is_better {
            row.wschat / row.tungstenite
        } else {
            row.tungstenite / row.wschat
        };
        println!(
            "{:<width$}  {:>12}  {:>12}  {:>8}",
            row.name,
            fmt(row.wschat),
            fmt(row.tungstenite),
            if ratio.is_finite() {
                format!("{ratio:.2}x")
            } else {
                "-".into()
            }
        );
    }
}
