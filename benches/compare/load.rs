//! The load scenarios: echo, one large message, broadcast fan-out, idle
//! connections. Each function drives one running server once and returns
//! its figures; `main` runs them against both servers, alternating.
//!
//! The load generator runs in this process, on the same two cores as the
//! server it measures. Where it can, it uses a single thread and `mio`
//! (epoll) so that it takes as little of them as possible: one read system
//! call for everything that has arrived on a socket, one write for every
//! message it has to send on it.

use crate::client::{self, BINARY, CLOSE, TEXT};
use crate::procs::{self, Server, now_ns};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// One figure from one run: name, value, and whether higher is better.
pub type Metric = (String, f64, bool);

/// If nothing at all arrives for this long, the run has stalled.
const STALL: Duration = Duration::from_secs(20);

/// A non-blocking client connection driven by the poll loop.
struct Conn {
    stream: MioStream,
    /// Bytes received and not yet parsed into whole frames.
    inbuf: Vec<u8>,
    /// Bytes to send; `out_pos` of them are already sent.
    out: Vec<u8>,
    out_pos: usize,
    sent: u64,
    received: u64,
}

impl Conn {
    fn new(stream: TcpStream, leftover: Vec<u8>) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream: MioStream::from_std(stream),
            inbuf: leftover,
            out: Vec::new(),
            out_pos: 0,
            sent: 0,
            received: 0,
        })
    }

    /// Reads everything available. Returns whether the server closed.
    ///
    /// With `short_read_drains`, a read that does not fill `scratch` is
    /// taken to have emptied the socket (later bytes raise a new readiness
    /// event), which saves a second system call only to be told
    /// `WouldBlock`. It can miss an end of stream that arrived together with
    /// the last bytes, so it is only for connections the server never closes.
    fn read_available(&mut self, scratch: &mut [u8], short_read_drains: bool) -> io::Result<bool> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    if short_read_drains && n < scratch.len() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `f` with each whole frame received (opcode, payload) and this
    /// connection's output buffer, then forgets those frames.
    fn frames(&mut self, mut f: impl FnMut(u8, &[u8], &mut Vec<u8>)) {
        let mut pos = 0;
        while let Some((opcode, header, total)) = client::parse(&self.inbuf[pos..]) {
            f(
                opcode,
                &self.inbuf[pos + header..pos + total],
                &mut self.out,
            );
            pos += total;
        }
        self.inbuf.drain(..pos);
    }

    /// Sends as much of the output buffer as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }
}

/// Connects `count` clients to `server` and registers them with a new poll.
fn connect_all(server: &Server, count: usize) -> io::Result<(Poll, Vec<Conn>)> {
    connect_to_each(&[server], count)
}

/// Connects `per_server` clients to each of `servers`, in order, and
/// registers them all with one new poll.
fn connect_to_each(servers: &[&Server], per_server: usize) -> io::Result<(Poll, Vec<Conn>)> {
    let poll = Poll::new()?;
    let mut conns = Vec::with_capacity(per_server * servers.len());
    for server in servers {
        for _ in 0..per_server {
            let (stream, leftover) = client::connect(server.addr)?;
            let mut conn = Conn::new(stream, leftover)?;
            poll.registry().register(
                &mut conn.stream,
                Token(conns.len()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(conn);
        }
    }
    Ok((poll, conns))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64
}

/// Latency figures, in microseconds, from nanosecond samples.
fn latency_metrics(what: &str, mut samples: Vec<u64>) -> Vec<Metric> {
    samples.sort_unstable();
    vec![
        (
            format!("{what} p50 (µs)"),
            percentile(&samples, 0.50) / 1e3,
            false,
        ),
        (
            format!("{what} p99 (µs)"),
            percentile(&samples, 0.99) / 1e3,
            false,
        ),
    ]
}

fn cpu_metrics(server: &Server, before: (f64, f64), units: f64, unit: &str) -> Vec<Metric> {
    let server_cpu = server.cpu_seconds() - before.0;
    let loader_cpu = procs::cpu_seconds("self") - before.1;
    vec![
        (
            format!("server CPU per {unit} (µs)"),
            server_cpu / units * 1e6,
            false,
        ),
        (
            format!("load generator CPU per {unit} (µs)"),
            loader_cpu / units * 1e6,
            false,
        ),
    ]
}

fn cpu_now(server: &Server) -> (f64, f64) {
    (server.cpu_seconds(), procs::cpu_seconds("self"))
}

/// Echo: `clients` connections, each sending `per_client` 64-byte text
/// messages with up to `window` unanswered at a time. Each message carries
/// its send time; its round trip ends when its echo is parsed.
pub fn echo(
    server: &Server,
    clients: usize,
    per_client: u64,
    window: u64,
) -> io::Result<Vec<Metric>> {
    let (mut poll, mut conns) = connect_all(server, clients)?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let total = clients as u64 * per_client;
    let mut latencies = Vec::with_capacity(total as usize);
    let cpu = cpu_now(server);
    let start = Instant::now();
    for conn in &mut conns {
        while conn.sent < window.min(per_client) {
            client::encode(
                TEXT,
                &client::stamped_payload(now_ns(), conn.sent),
                &mut conn.out,
            );
            conn.sent += 1;
        }
        conn.flush()?;
    }
    let mut done = 0;
    while done < total {
        poll.poll(&mut events, Some(STALL))?;
        if events.is_empty() {
            return Err(io::Error::other(format!(
                "stalled after {done} of {total} echoes"
            )));
        }
        for event in &events {
            let conn = &mut conns[event.token().0];
            if event.is_readable() && conn.read_available(&mut scratch, true)? {
                return Err(io::Error::other("server closed the connection"));
            }
            let mut received = 0;
            let mut sent = conn.sent;
            let in_order = conn.received;
            conn.frames(|opcode, payload, out| {
                assert_eq!(opcode, TEXT, "echo of a text message");
                let now = now_ns();
                let (sent_at, seq) = client::read_stamp(payload).expect("stamped echo");
                assert_eq!(seq, in_order + received, "echoes in the order sent");
                latencies.push(now - sent_at);
                received += 1;
                if sent < per_client {
                    client::encode(TEXT, &client::stamped_payload(now, sent), out);
                    sent += 1;
                }
            });
            conn.sent = sent;
            conn.received += received;
            done += received;
            conn.flush()?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut metrics = vec![("messages/s".to_string(), total as f64 / elapsed, true)];
    metrics.extend(latency_metrics("round trip", latencies));
    metrics.extend(cpu_metrics(server, cpu, total as f64, "message"));
    Ok(metrics)
}

/// One message of `frame.len()` bytes (already encoded and masked) sent and
/// echoed back, `repeats` times on one connection; the median time.
pub fn large(
    server: &Server,
    frame: &Arc<Vec<u8>>,
    payload_len: usize,
    repeats: usize,
) -> io::Result<Vec<Metric>> {
    let (mut stream, leftover) = client::connect(server.addr)?;
    assert!(leftover.is_empty());
    let mut reply = vec![0u8; payload_len];
    let mut times = Vec::new();
    let cpu = cpu_now(server);
    let faults = procs::page_faults(server.pid);
    // One round trip first, not timed: it grows both servers' buffers.
    for round in 0..=repeats {
        let mut writer = stream.try_clone()?;
        let frame = Arc::clone(frame);
        let start = Instant::now();
        // The whole message is written by a second thread while this one
        // reads, so neither side ever waits on a full socket buffer for
        // long; both servers read the whole message before echoing it.
        let sending = thread::spawn(move || writer.write_all(&frame));
        let mut header = [0u8; 10];
        stream.read_exact(&mut header[..2])?;
        let extra = match header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        stream.read_exact(&mut header[2..2 + extra])?;
        let (_, len) = client::parse_header(&header).expect("header");
        assert_eq!(len as usize, payload_len, "echo of the whole message");
        stream.read_exact(&mut reply)?;
        let elapsed = start.elapsed();
        sending.join().expect("writer thread")?;
        if round > 0 {
            times.push(elapsed.as_secs_f64());
        }
    }
    // The echo must be the message: check the last bytes against the
    // unmasked original (the frame ends with the masked payload).
    let tail = &frame[frame.len() - 64..];
    let offset = payload_len - 64;
    for (i, (&masked, &echoed)) in tail.iter().zip(&reply[payload_len - 64..]).enumerate() {
        assert_eq!(masked ^ client::KEY[(offset + i) & 3], echoed);
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    let mut metrics = vec![
        ("round trip (ms)".to_string(), seconds * 1e3, false),
        (
            "MB/s (message size / round trip)".to_string(),
            payload_len as f64 / seconds / 1e6,
            true,
        ),
    ];
    metrics.extend(cpu_metrics(server, cpu, (repeats + 1) as f64, "round trip"));
    let faults = procs::page_faults(server.pid) - faults;
    metrics.push((
        "server page faults per round trip".into(),
        faults as f64 / (repeats + 1) as f64,
        false,
    ));
    let _ = stream.write_all(&close_frame());
    Ok(metrics)
}

/// Broadcast: `clients` connections; the first sends `messages` 64-byte
/// text messages, with up to `window` not yet delivered to everyone, and
/// every client (the sender too) receives each one as `ID<port>: ...`.
pub fn fanout(
    server: &Server,
    clients: usize,
    messages: u64,
    window: u64,
) -> io::Result<Vec<Metric>> {
    let (mut poll, mut conns) = connect_all(server, clients)?;
    // A client joins the room just after its handshake response is sent.
    thread::sleep(Duration::from_millis(300));
    // Warm-up, and a check that every client is in the room.
    fan_phase(&mut poll, &mut conns, 20, window, None)?;
    let mut latencies = Vec::with_capacity(clients * messages as usize);
    let cpu = cpu_now(server);
    let elapsed = fan_phase(
        &mut poll,
        &mut conns,
        messages,
        window,
        Some(&mut latencies),
    )?;
    let deliveries = clients as f64 * messages as f64;
    let mut metrics = vec![("deliveries/s".to_string(), deliveries / elapsed, true)];
    metrics.extend(latency_metrics("delivery latency", latencies));
    metrics.extend(cpu_metrics(server, cpu, deliveries, "delivery"));
    Ok(metrics)
}

/// Fan-out across processes: `per_server` clients on each of `servers`,
/// the first client the one sender; every client receives every message.
/// CPU is that of all the servers together, plus `extra_pids` (Redis).
pub fn fanout_across(
    servers: &[&Server],
    extra_pids: &[u32],
    per_server: usize,
    messages: u64,
    window: u64,
) -> io::Result<Vec<Metric>> {
    let (mut poll, mut conns) = connect_to_each(servers, per_server)?;
    thread::sleep(Duration::from_millis(300));
    fan_phase(&mut poll, &mut conns, 20, window, None)?;
    let cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .map(|pid| procs::cpu_seconds(&pid.to_string()))
            .sum()
    };
    let mut pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    pids.extend_from_slice(extra_pids);
    let before = cpu(&pids);
    let mut latencies = Vec::with_capacity(conns.len() * messages as usize);
    let elapsed = fan_phase(
        &mut poll,
        &mut conns,
        messages,
        window,
        Some(&mut latencies),
    )?;
    let deliveries = conns.len() as f64 * messages as f64;
    let mut metrics = vec![("deliveries/s".to_string(), deliveries / elapsed, true)];
    metrics.extend(latency_metrics("delivery latency", latencies));
    metrics.push((
        "server CPU per delivery, Redis included (µs)".to_string(),
        (cpu(&pids) - before) / deliveries * 1e6,
        false,
    ));
    Ok(metrics)
}

/// Fan-out as above, while `stuck` other clients never read a byte.
///
/// Loopback TCP grows a socket's send buffer to a few MiB, so a client that
/// never reads only blocks the server's writes to it after that much. So
/// the stuck clients connect first, with receive buffers of 4 KiB, and a
/// filler client sends eight messages of almost 1 MiB, which only they and
/// the filler receive: their sockets are full before the measured phase
/// begins, well within the server's write timeout (10 s). The figures are
/// the readers'.
pub fn fanout_with_stuck(
    server: &Server,
    clients: usize,
    stuck: usize,
    messages: u64,
    window: u64,
) -> io::Result<Vec<Metric>> {
    let mut never_read = Vec::with_capacity(stuck);
    for _ in 0..stuck {
        never_read.push(client::connect_small_buffer(server.addr)?);
    }
    let (mut filler, _) = client::connect(server.addr)?;
    let mut filler_reader = filler.try_clone()?;
    // The filler reads everything it is sent, until it is closed.
    thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(filler_reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut frame = Vec::new();
    client::encode(BINARY, &vec![b'x'; (1 << 20) - 64], &mut frame);
    // A server that waits on the stuck clients stops reading the filler
    // too: give up on the rest after a few seconds (the stall shows below).
    filler.set_write_timeout(Some(Duration::from_secs(3)))?;
    for _ in 0..8 {
        if filler.write_all(&frame).is_err() {
            break;
        }
    }
    thread::sleep(Duration::from_millis(500));
    let result = fanout(server, clients, messages, window);
    drop(never_read);
    let _ = filler.shutdown(std::net::Shutdown::Both);
    result
}

fn fan_phase(
    poll: &mut Poll,
    conns: &mut [Conn],
    messages: u64,
    window: u64,
    mut latencies: Option<&mut Vec<u64>>,
) -> io::Result<f64> {
    let clients = conns.len() as u32;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut delivered = vec![0u32; messages as usize];
    let mut completed = 0u64;
    let mut sent = 0u64;
    for conn in conns.iter_mut() {
        conn.received = 0;
    }
    let start = Instant::now();
    while completed < messages {
        // The sender (connection 0) keeps up to `window` messages in flight.
        let sender = &mut conns[0];
        while sent < messages && sent - completed < window {
            client::encode(
                TEXT,
                &client::stamped_payload(now_ns(), sent),
                &mut sender.out,
            );
            sent += 1;
        }
        sender.flush()?;
        poll.poll(&mut events, Some(STALL))?;
        if events.is_empty() {
            return Err(io::Error::other(format!(
                "stalled: {completed} of {messages} messages reached all {clients} clients"
            )));
        }
        for event in &events {
            let conn = &mut conns[event.token().0];
            if event.is_readable() && conn.read_available(&mut scratch, true)? {
                return Err(io::Error::other("server closed a connection"));
            }
            let mut received = conn.received;
            conn.frames(|opcode, payload, _| {
                assert_eq!(opcode, TEXT);
                let now = now_ns();
                let (sent_at, seq) = client::read_stamp(payload).expect("stamped message");
                // The contract: one sender's messages reach everyone in order.
                assert_eq!(seq, received, "messages in the order sent");
                received += 1;
                if let Some(latencies) = latencies.as_deref_mut() {
                    latencies.push(now - sent_at);
                }
                let count = &mut delivered[seq as usize];
                *count += 1;
                if *count == clients {
                    completed += 1;
                }
            });
            conn.received = received;
            conn.flush()?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn close_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    client::encode(CLOSE, &1000u16.to_be_bytes(), &mut frame);
    frame
}

/// Idle connections: opens `clients` connections and leaves them idle,
/// reads the server's resident memory and threads, then closes them all
/// (a close frame each, as a browser would) and times how long until the
/// server is back to the threads it had before.
pub fn idle(server: &Server, clients: usize) -> io::Result<Vec<Metric>> {
    let (rss_before, threads_before) = server.status();
    let start = Instant::now();
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        streams.push(client::connect(server.addr)?);
    }
    let connect_seconds = start.elapsed().as_secs_f64();
    // Let every thread reach its blocking read.
    thread::sleep(Duration::from_secs(1));
    let (rss_idle, threads_idle) = server.status();

    // Close everything; a second thread watches the server's thread count.
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(clients);
    for (i, (stream, leftover)) in streams.into_iter().enumerate() {
        let mut conn = Conn::new(stream, leftover)?;
        poll.registry()
            .register(&mut conn.stream, Token(i), Interest::READABLE)?;
        conns.push(Some(conn));
    }
    let pid = server.pid;
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    let watcher = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let start: Instant = started_rx.recv().expect("start signal");
            while !stop.load(Ordering::Relaxed) {
                if procs::status(pid).1 <= threads_before {
                    return Some(start.elapsed());
                }
                thread::sleep(Duration::from_millis(1));
            }
            None
        })
    };
    let close = close_frame();
    let close_start = Instant::now();
    started_tx.send(close_start).expect("watcher");
    for conn in conns.iter_mut().flatten() {
        conn.out.extend_from_slice(&close);
        conn.flush()?;
    }
    let mut open = clients;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 4096];
    while open > 0 {
        poll.poll(&mut events, Some(STALL))?;
        if events.is_empty() {
            stop.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!("{open} connections never closed")));
        }
        for event in &events {
            let slot = &mut conns[event.token().0];
            if let Some(conn) = slot {
                // The server's close frame, then its end of TCP: drop ours too.
                if conn.read_available(&mut scratch, false).unwrap_or(true) {
                    *slot = None;
                    open -= 1;
                }
            }
        }
    }
    let clients_closed = close_start.elapsed().as_secs_f64();
    // Give the server up to 30 s to get back to its baseline.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !watcher.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let back = watcher
        .join()
        .expect("watcher")
        .map_or(f64::NAN, |d| d.as_secs_f64());
    thread::sleep(Duration::from_millis(200));
    let (rss_after, threads_after) = server.status();
    let per_conn = (rss_idle as f64 - rss_before as f64) / clients as f64;
    Ok(vec![
        (
            "resident memory per connection (KiB)".into(),
            per_conn,
            false,
        ),
        ("server threads, idle".into(), threads_idle as f64, false),
        (
            "server threads, baseline".into(),
            threads_before as f64,
            false,
        ),
        (
            "server RSS with all connected (MiB)".into(),
            rss_idle as f64 / 1024.0,
            false,
        ),
        (
            "server RSS after all closed (MiB)".into(),
            rss_after as f64 / 1024.0,
            false,
        ),
        (
            "server threads after all closed".into(),
            threads_after as f64,
            false,
        ),
        (
            "connections opened per second".into(),
            clients as f64 / connect_seconds,
            true,
        ),
        (
            "close: all clients saw the server close (ms)".into(),
            clients_closed * 1e3,
            false,
        ),
        (
            "close: server threads back to baseline (ms)".into(),
            back * 1e3,
            false,
        ),
    ])
}
