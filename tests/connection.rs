//! The connection layer from outside, over real sockets: clients that stop
//! reading, ping floods, keep-alive against tricklers, the graceful stop,
//! and a fresh client's first messages.

mod common;

use common::*;
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A client that has completed its handshake with a tiny receive buffer,
/// so that a server writing to it blocks after a few kilobytes.
fn small_buffer_client(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (head, _) = http_exchange(&mut stream, upgrade_request("").as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream
}

/// Reads frames on a thread of its own and hands each on with the time it
/// arrived, until the connection ends.
fn frames_with_times(stream: &TcpStream) -> mpsc::Receiver<(ServerFrame, Instant)> {
    let mut stream = stream.try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        while let Ok(frame) = read_frame(&mut stream) {
            if tx.send((frame, Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn clients_that_never_read_are_dropped_in_parallel_and_never_delay_the_readers() {
    const STUCK: usize = 200;
    const MESSAGES: usize = 8;
    let server = ServerProcess::start(&["--write-timeout", "2"]);
    let stuck: Vec<TcpStream> = (0..STUCK)
        .map(|_| small_buffer_client(server.addr))
        .collect();
    let readers: Vec<TcpStream> = (0..3).map(|_| raw_client(server.addr)).collect();
    let mut sender = raw_client(server.addr);
    let sender_copies = frames_with_times(&sender);
    let arrivals: Vec<_> = readers.iter().map(frames_with_times).collect();
    assert!(server.wait_for_log(&format!("connected ({} clients)", STUCK + 4)));
    let memory_before = server.memory_kib("VmRSS");

    let mut sent_at = Vec::new();
    for i in 0..MESSAGES {
        let mut payload = vec![b'x'; 1 << 20];
        payload[0] = i as u8;
        sent_at.push(Instant::now());
        sender
            .write_all(&client_frame(BINARY, &payload, true))
            .unwrap();
        thread::sleep(Duration::from_millis(250));
    }
    let mut slowest = Duration::ZERO;
    for (r, arrived) in arrivals.iter().enumerate() {
        for (i, sent) in sent_at.iter().enumerate() {
            let (frame, at) = arrived
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("reader {r} lost message {i}"));
            assert_eq!((frame.first_byte, frame.payload[0]), (BINARY, i as u8));
            assert_eq!(frame.payload.len(), 1 << 20);
            let delay = at.duration_since(*sent);
            assert!(
                delay < Duration::from_secs(1),
                "reader {r}, message {i}: {delay:?}"
            );
            slowest = slowest.max(delay);
        }
    }
    assert_eq!(sender_copies.iter().take(MESSAGES).count(), MESSAGES);
    // Every stuck client was dropped within about two write timeouts of
    // the first message: in parallel, not one after another.
    let gone = "disconnected: dropped by the server: too slow";
    let deadline = sent_at[0] + Duration::from_secs(5);
    while server.count_log(gone) < STUCK && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        server.count_log(gone),
        STUCK,
        "stuck clients still connected"
    );
    let all_gone = sent_at[0].elapsed();
    // The eight messages were shared by every queue, never copied per
    // client: 200 copies would be 1.6 GiB.
    let grown = server.memory_kib("VmHWM").saturating_sub(memory_before);
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
    eprintln!(
        "slowest delivery {slowest:?}; {STUCK} stuck clients gone {all_gone:?} after the \
         first message; peak memory grew {grown} KiB"
    );
    drop(stuck);
}

#[test]
fn a_client_flooding_pings_while_its_queue_is_full_is_dropped_and_memory_stays_bounded() {
    let server = ServerProcess::start(&["--write-timeout", "2"]);
    let flooder = small_buffer_client(server.addr);
    let mut sender = raw_client(server.addr);
    let _copies = frames_with_times(&sender);
    let memory_before = server.memory_kib("VmRSS");
    // Fill the flooder's queue: it never reads.
    for _ in 0..4 {
        sender
            .write_all(&client_frame(BINARY, &vec![7; 1 << 20], true))
            .unwrap();
    }
    // Empty pings as fast as it can, for at most ten seconds, until the
    // server drops it.
    let mut writer = flooder.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let ping = client_frame(PING, b"", true).repeat(1000);
        let started = Instant::now();
        let mut sent = 0usize;
        while started.elapsed() < Duration::from_secs(10) && writer.write_all(&ping).is_ok() {
            sent += 1000;
        }
        sent
    });
    let pings = flood.join().unwrap();
    assert!(pings > 10_000, "only {pings} pings were sent");
    assert!(server.wait_for_log("disconnected: dropped by the server: too slow"));
    // Without coalescing, each ping would queue a pong. The bound on one
    // client's queue is 16 MiB; allow 16 MiB more for everything else.
    let grown = server.memory_kib("VmHWM").saturating_sub(memory_before);
    assert!(
        grown < 32 * 1024,
        "memory grew by {grown} KiB after {pings} pings"
    );
    eprintln!("{pings} pings; peak memory grew {grown} KiB");
}

#[test]
fn a_client_that_never_answers_pings_is_closed_one_interval_after_the_first_whatever_it_trickles() {
    let server = ServerProcess::start(&["--ping-interval", "2"]);
    let mut client = raw_client(server.addr);
    let connected = Instant::now();
    let arrivals = frames_with_times(&client);
    // A frame that announces 100 bytes, then one byte every 300 ms.
    let frame = client_frame(TEXT, &[b'.'; 100], true);
    client.write_all(&frame[..6]).unwrap();
    let mut ping_at = None;
    let mut close = None;
    for byte in &frame[6..] {
        if client.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        while let Ok((frame, at)) = arrivals.try_recv() {
            match frame.first_byte {
                PING => ping_at = ping_at.or(Some(at)),
                CLOSE => close = Some((frame.close_code(), at)),
                other => panic!("unexpected frame {other:#x}"),
            }
        }
        if close.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(300));
    }
    let ping_at = ping_at.expect("a ping");
    let (code, close_at) = close.expect("a close frame");
    assert_eq!(code, Some(1008));
    let first_ping = ping_at.duration_since(connected);
    let waited = close_at.duration_since(ping_at);
    assert!(
        first_ping > Duration::from_millis(1500) && first_ping < Duration::from_millis(2500),
        "{first_ping:?}"
    );
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert!(server.wait_for_log("disconnected: no pong within the ping interval"));
}

#[test]
fn a_client_that_answers_pings_stays_even_midway_through_a_slow_message() {
    let server = ServerProcess::start(&["--ping-interval", "1"]);
    let mut client = raw_client(server.addr);
    let arrivals = frames_with_times(&client);
    let mut pongs = 0;
    // A text message in 17 fragments, one every 300 ms: almost five seconds,
    // with a pong for every ping in between.
    client
        .write_all(&client_frame(TEXT_START, b"slow", true))
        .unwrap();
    for _ in 0..15 {
        thread::sleep(Duration::from_millis(300));
        while let Ok((frame, _)) = arrivals.try_recv() {
            assert_eq!(frame.first_byte, PING, "{frame:?}");
            client
                .write_all(&client_frame(PONG, &frame.payload, true))
                .unwrap();
            pongs += 1;
        }
        client.write_all(&client_frame(CONT, b".", true)).unwrap();
    }
    client
        .write_all(&client_frame(CONT_FIN, b"done", true))
        .unwrap();
    assert!(pongs >= 3, "only {pongs} pings in five seconds");
    let port = client.local_addr().unwrap().port();
    let expected = format!("ID{port}: slow{}done", ".".repeat(15));
    loop {
        let (frame, _) = arrivals
            .recv_timeout(Duration::from_secs(5))
            .expect("the whole message, broadcast");
        match frame.first_byte {
            PING => continue,
            TEXT => {
                assert_eq!(String::from_utf8(frame.payload).unwrap(), expected);
                break;
            }
            _ => panic!("unexpected {frame:?}"),
        }
    }
    assert_eq!(server.count_log("disconnected"), 0);
}

#[test]
fn sigterm_and_sigint_close_every_client_with_1001_and_exit_0() {
    for signal in ["TERM", "INT"] {
        let mut server = ServerProcess::start(&[]);
        let mut idle: Vec<TcpStream> = (0..3).map(|_| raw_client(server.addr)).collect();
        // One client is in the middle of a frame when the stop comes.
        let mut halfway = raw_client(server.addr);
        halfway
            .write_all(&client_frame(TEXT, b"never finished", true)[..8])
            .unwrap();
        assert!(server.wait_for_log("connected (4 clients)"));
        let stopped = Instant::now();
        server.signal(signal);
        for client in &mut idle {
            let frame = read_frame(client).expect("a close frame");
            assert_eq!(frame.close_code(), Some(1001), "SIG{signal}");
            client
                .write_all(&client_frame(CLOSE, &1001u16.to_be_bytes(), true))
                .unwrap();
            expect_tcp_closed(client);
        }
        let frame = read_frame(&mut halfway).expect("a close frame mid-frame too");
        assert_eq!(frame.close_code(), Some(1001));
        let status = server
            .wait_for_exit(Duration::from_secs(6))
            .expect("the server exits");
        assert!(status.success(), "SIG{signal}: {status:?}");
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "{:?}",
            stopped.elapsed()
        );
        assert!(server.wait_for_log(&format!("SIG{signal} received: stopping")));
        assert!(server.wait_for_log("stopping: sending close 1001 to 4 clients"));
    }
}

#[test]
fn a_client_receives_every_message_broadcast_after_its_101() {
    let server = ServerProcess::start(&[]);
    let mut sender = raw_client(server.addr);
    let _copies = frames_with_times(&sender);
    for i in 0..200 {
        let mut fresh = connect(server.addr);
        let (head, _) = http_exchange(&mut fresh, upgrade_request("").as_bytes());
        assert!(head.starts_with("HTTP/1.1 101"));
        // At once, before the fresh client could send anything.
        let text = format!("message {i}");
        sender
            .write_all(&client_frame(TEXT, text.as_bytes(), true))
            .unwrap();
        let frame = read_frame(&mut fresh).unwrap_or_else(|e| panic!("round {i}: {e}"));
        let got = String::from_utf8(frame.payload).unwrap();
        assert!(got.ends_with(&format!(": {text}")), "round {i}: {got}");
    }
}

#[test]
fn a_new_client_gets_its_101_before_any_broadcast() {
    // Messages fly all the while clients join: none may reach a client
    // before its 101 (which would garble the response's head).
    let server = ServerProcess::start(&[]);
    let mut sender = raw_client(server.addr);
    let _copies = frames_with_times(&sender);
    let flooding = thread::spawn(move || {
        let frame = client_frame(TEXT, b"busy room", true);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if sender.write_all(&frame).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    for _ in 0..150 {
        let mut fresh = connect(server.addr);
        let (head, _) = http_exchange(&mut fresh, upgrade_request("").as_bytes());
        assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
        let frame = read_frame(&mut fresh).expect("a broadcast");
        assert!(frame.payload.ends_with(b": busy room"), "{frame:?}");
    }
    flooding.join().unwrap();
}

#[test]
fn no_read_of_a_closed_connection_blocks_the_server() {
    // A client that sends a close and then nothing, never closing TCP:
    // the server closes TCP first, and lets go after its drain timeout.
    let server = ServerProcess::start(&[]);
    let mut client = raw_client(server.addr);
    client
        .write_all(&client_frame(CLOSE, &1000u16.to_be_bytes(), true))
        .unwrap();
    let frame = read_frame(&mut client).unwrap();
    assert_eq!(frame.close_code(), Some(1000));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the close: {rest:?}");
    assert!(server.wait_for_log("disconnected: closed by client with 1000"));
}
