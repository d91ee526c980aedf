//! Every limit and timeout of the command line, tried over real sockets
//! against the real binary, while a well-behaved client keeps chatting.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn max_clients_refuses_one_more_with_503_and_leaves_no_thread() {
    let server = ServerProcess::start(&["--max-clients", "2"]);
    let baseline = server.threads();
    let mut first = raw_client(server.addr);
    let _second = raw_client(server.addr);
    let mut third = connect(server.addr);
    let (head, body) = http_exchange(&mut third, upgrade_request("").as_bytes());
    assert_eq!(status(&head), 503, "{head}");
    assert!(body.contains("too many clients"));
    expect_tcp_closed(&mut third);
    drop(third);
    assert!(
        server.wait_for_threads(baseline + 2),
        "threads: {}",
        server.threads()
    );
    chats(&mut first, "still served");
    // When one leaves, there is room again.
    drop(first);
    assert!(server.wait_for_threads(baseline + 1));
    let mut fourth = raw_client(server.addr);
    chats(&mut fourth, "room again");
}

#[test]
fn allow_origin_refuses_other_origins_with_403() {
    let server = ServerProcess::start(&[
        "--allow-origin",
        "http://good.example",
        "--allow-origin",
        "http://127.0.0.1:8002",
    ]);
    for origin in ["http://good.example", "http://127.0.0.1:8002"] {
        let mut ok = connect(server.addr);
        let request = upgrade_request(&format!("Origin: {origin}\r\n"));
        assert_eq!(
            status(&http_exchange(&mut ok, request.as_bytes()).0),
            101,
            "{origin}"
        );
    }
    for extra in ["Origin: http://evil.example\r\n", "Origin: null\r\n", ""] {
        let mut refused = connect(server.addr);
        let (head, body) = http_exchange(&mut refused, upgrade_request(extra).as_bytes());
        assert_eq!(status(&head), 403, "{extra:?}");
        assert!(body.contains("origin"), "{body}");
        expect_tcp_closed(&mut refused);
    }
    assert!(server.wait_for_log("handshake refused: 403"));
}

#[test]
fn handshake_timeout_cuts_off_a_trickling_client_while_others_connect() {
    let server = ServerProcess::start(&["--echo", "--handshake-timeout", "2"]);
    let addr = server.addr;
    let started = Instant::now();
    let trickler = thread::spawn(move || {
        let mut stream = connect(addr);
        // One byte every 200 ms: each read succeeds, only the deadline stops it.
        for byte in upgrade_request("").bytes() {
            if stream.write_all(&[byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
            if started.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    // Meanwhile a normal client connects and chats.
    thread::sleep(Duration::from_millis(300));
    let mut good = raw_client(addr);
    chats(&mut good, "not waiting for the slow one");
    let answer = trickler.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(server.wait_for_log("handshake refused: 408"));
    chats(&mut good, "and still here");
}

#[test]
fn idle_client_that_answers_pings_stays_connected() {
    let server = ServerProcess::start(&["--echo", "--ping-interval", "1"]);
    let mut stream = raw_client(server.addr);
    let until = Instant::now() + Duration::from_millis(4500);
    let mut pings = 0;
    while Instant::now() < until {
        let frame = read_frame(&mut stream).expect("a ping");
        assert_eq!(frame.first_byte, PING);
        pings += 1;
        stream
            .write_all(&client_frame(PONG, &frame.payload, true))
            .unwrap();
    }
    assert!(pings >= 3, "only {pings} pings in 4.5 s");
    chats(&mut stream, "still connected");
}

#[test]
fn idle_client_that_never_answers_is_dropped_with_a_reason() {
    let server = ServerProcess::start(&["--echo", "--ping-interval", "1"]);
    let mut silent = raw_client(server.addr);
    let ping = read_frame(&mut silent).expect("a ping");
    assert_eq!(ping.first_byte, PING);
    // No pong: within one more interval the server gives up.
    assert_eq!(expect_close(&mut silent), Some(1008));
    assert!(server.wait_for_log("disconnected: no pong within the ping interval"));
}

#[test]
fn ping_interval_zero_sends_no_pings() {
    let server = ServerProcess::start(&["--echo", "--ping-interval", "0"]);
    let mut stream = raw_client(server.addr);
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = stream.read(&mut byte).expect_err("no frame expected");
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
}

#[test]
fn write_timeout_drops_a_client_that_stops_reading() {
    let server = ServerProcess::start(&["--write-timeout", "1"]);
    let mut sender = raw_client(server.addr);
    let mut stuck = raw_client(server.addr);
    let big = vec![b'x'; 60_000];
    let started = Instant::now();
    // The sender reads its own copies; `stuck` reads nothing.
    for _ in 0..200 {
        sender.write_all(&client_frame(TEXT, &big, true)).unwrap();
        read_frame(&mut sender).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(server.wait_for_log("dropped by the server: too slow"));
    // The stuck client's socket was shut: once its buffers are read out, it ends.
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    loop {
        match stuck.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    chats(&mut sender, "the room goes on");
}

/// The descriptors the server holds, from /proc (Linux).
fn descriptors(server: &ServerProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[test]
fn of_a_burst_exactly_max_clients_are_served_and_the_rest_get_503() {
    let server = ServerProcess::start(&["--max-clients", "100"]);
    // Each sends its request as soon as it is connected, as clients do.
    let mut streams: Vec<TcpStream> = (0..150)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream.write_all(upgrade_request("").as_bytes()).unwrap();
            stream
        })
        .collect();
    let mut upgraded = 0;
    let mut refused = 0;
    for stream in &mut streams {
        let (head, _) = read_http_response(stream);
        match status(&head) {
            101 => upgraded += 1,
            503 => refused += 1,
            other => panic!("unexpected {other}: {head}"),
        }
    }
    assert_eq!((upgraded, refused), (100, 50));
}

#[test]
fn idle_connections_over_the_limit_hold_no_thread_or_descriptor() {
    let server = ServerProcess::start(&["--max-clients", "300"]);
    let baseline = (server.threads(), descriptors(&server));
    let mut idle = Vec::new();
    let mut most = (0, 0);
    for _ in 0..1000 {
        idle.push(TcpStream::connect(server.addr).unwrap());
        if idle.len() % 50 == 0 {
            most.0 = most.0.max(server.threads());
            most.1 = most.1.max(descriptors(&server));
        }
    }
    thread::sleep(Duration::from_millis(500));
    most.0 = most.0.max(server.threads());
    most.1 = most.1.max(descriptors(&server));
    // The limit, plus the connections waiting for their 503 and a few.
    assert!(
        most.0 <= baseline.0 + 300 + 2,
        "threads {most:?} from {baseline:?}"
    );
    assert!(
        most.1 <= baseline.1 + 300 + 70,
        "descriptors {most:?} from {baseline:?}"
    );
    // One of the 300 leaves: a newcomer is served at once.
    drop(idle.remove(0));
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut honest = raw_client(server.addr);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    chats(&mut honest, "served");
}

#[test]
fn a_low_open_file_limit_is_said_at_start_and_kept() {
    let mut server = ServerProcess::start_with(
        &["prlimit", "--nofile=512", env!("CARGO_BIN_EXE_wschat")],
        &[],
    );
    assert!(server.wait_for_log("the open-file limit is 512: serving at most 384 clients"));
    let idle: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut honest = connect(server.addr);
    let (head, _) = http_exchange(&mut honest, upgrade_request("").as_bytes());
    assert!(matches!(status(&head), 101 | 503), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    let warnings = server.count_log("accept failed");
    assert!(warnings <= 3, "{warnings} accept warnings");
    assert!(
        server.wait_for_exit(Duration::from_millis(10)).is_none(),
        "the server died"
    );
}

#[test]
fn max_buffered_bounds_the_memory_of_all_unfinished_messages_together() {
    const STALLED: usize = 400;
    let server = ServerProcess::start(&[
        "--max-buffered",
        "67108864",
        "--max-message",
        "1048576",
        "--write-timeout",
        "2",
    ]);
    let memory_before = server.memory_kib("VmRSS");
    // Each announces a message of almost 1 MiB, sends half of it, and stalls.
    let payload = vec![b'x'; (1 << 20) - 16];
    let frame = client_frame(BINARY, &payload, true);
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut stream = raw_client(server.addr);
        let _ = stream.write_all(&frame[..frame.len() / 2]);
        stalled.push(stream);
    }
    // 64 of them fit in 64 MiB; every other one gets 1013 on its header.
    let refused = "failed with 1013";
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.count_log(refused) < STALLED - 64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.count_log(refused), STALLED - 64);
    let grown = server.memory_kib("VmHWM").saturating_sub(memory_before);
    assert!(
        grown < 64 * 1024 + STALLED * 64,
        "memory grew by {grown} KiB"
    );
    // An honest client still chats, at once.
    let started = Instant::now();
    let mut honest = raw_client(server.addr);
    chats(&mut honest, "small messages still flow");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}
