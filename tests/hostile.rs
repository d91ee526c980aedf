//! Hostile and broken clients, over real sockets: malformed handshakes,
//! bursts of vanishing and stalling connections, and a heavy mixed load. The
//! server must answer each with the right status or a clean close, never
//! panic, and never lose a message for the well-behaved clients.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

fn status_of(server: &ServerProcess, request: &[u8]) -> u16 {
    let mut stream = connect(server.addr);
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    status(&String::from_utf8_lossy(&answer))
}

#[test]
fn every_malformed_handshake_gets_the_right_status() {
    let server = ServerProcess::start(&[]);
    let ok = upgrade_request("");
    let key_line = format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n");
    let cases: Vec<(&str, String, u16)> = vec![
        ("wrong method", ok.replace("GET /", "POST /"), 405),
        ("lowercase method", ok.replace("GET /", "get /"), 405),
        ("HTTP/1.0", ok.replace("HTTP/1.1", "HTTP/1.0"), 400),
        ("HTTP/2.0", ok.replace("HTTP/1.1", "HTTP/2.0"), 400),
        (
            "target without slash",
            ok.replace("GET / ", "GET chat "),
            400,
        ),
        ("missing Host", ok.replace("Host: localhost\r\n", ""), 400),
        // An Upgrade that does not ask for websocket is ignored (RFC 9110
        // §7.8): the request is an ordinary page request.
        (
            "missing Upgrade value",
            ok.replace("Upgrade: websocket", "Upgrade: "),
            200,
        ),
        (
            "Upgrade not websocket",
            ok.replace("Upgrade: websocket", "Upgrade: h2c"),
            200,
        ),
        (
            "missing Connection",
            ok.replace("Connection: Upgrade\r\n", ""),
            400,
        ),
        (
            "Connection without Upgrade",
            ok.replace("Connection: Upgrade", "Connection: close"),
            400,
        ),
        ("missing key", ok.replace(&key_line, ""), 400),
        ("empty key", ok.replace(SAMPLE_KEY, ""), 400),
        (
            "duplicate key",
            ok.replace(&key_line, &key_line.repeat(2)),
            400,
        ),
        (
            "key of 15 bytes",
            ok.replace(SAMPLE_KEY, "AAAAAAAAAAAAAAAAAAAA"),
            400,
        ),
        (
            "key of 17 bytes",
            ok.replace(SAMPLE_KEY, "AAAAAAAAAAAAAAAAAAAAAAA="),
            400,
        ),
        (
            "key not base64",
            ok.replace(SAMPLE_KEY, "!!!!!!!!!!!!!!!!!!!!!!=="),
            400,
        ),
        (
            "missing version",
            ok.replace("Sec-WebSocket-Version: 13\r\n", ""),
            426,
        ),
        ("version 8", ok.replace("Version: 13", "Version: 8"), 426),
        (
            "version garbage",
            ok.replace("Version: 13", "Version: 13abc"),
            426,
        ),
        (
            "header without colon",
            ok.replace("Host: localhost", "Host localhost"),
            400,
        ),
        (
            "space before colon",
            ok.replace("Host: localhost", "Host : localhost"),
            400,
        ),
        (
            "folded header",
            ok.replace("Host: localhost\r\n", "Host: localhost\r\n  folded\r\n"),
            400,
        ),
        (
            "huge header",
            upgrade_request(&format!("X-Big: {}\r\n", "a".repeat(10_000))),
            431,
        ),
        (
            "many headers",
            upgrade_request(&"X-A: b\r\n".repeat(2000)),
            431,
        ),
        ("garbage", "\u{1}\u{2}\u{3}garbage\r\n\r\n".to_string(), 400),
        ("empty request line", "\r\n\r\n".to_string(), 400),
    ];
    for (what, request, expected) in cases {
        assert_eq!(status_of(&server, request.as_bytes()), expected, "{what}");
    }
    let mut non_utf8 = ok.clone().into_bytes();
    non_utf8.splice(6..6, [0xFF, 0xFE]);
    assert_eq!(status_of(&server, &non_utf8), 400, "non-UTF-8");
    // A head that never ends: 431 once 8 KiB have arrived.
    assert_eq!(
        status_of(&server, &[b'a'; 9000]),
        431,
        "endless request line"
    );
    // After all that, a good client still gets in.
    raw_client(server.addr);
    assert!(!server.wait_for_log("panicked"));
}

#[test]
fn request_split_across_reads_with_bytes_pipelined_after_it() {
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = connect(server.addr);
    let mut bytes = upgrade_request("").into_bytes();
    bytes.extend(client_frame(TEXT, b"first", true));
    bytes.extend(client_frame(BINARY, &[1, 2, 3], true));
    for piece in bytes.chunks(7) {
        stream.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let (head, _) = read_http_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"));
    assert_eq!(read_frame(&mut stream).unwrap().payload, b"first");
    assert_eq!(read_frame(&mut stream).unwrap().payload, [1, 2, 3]);
}

#[test]
fn bursts_of_vanishing_and_stalled_clients_leave_nothing_behind() {
    let server = ServerProcess::start(&["--handshake-timeout", "1"]);
    let baseline = server.threads();
    // 1,000 clients that upgrade and vanish without a close frame, 50 at a time.
    for _ in 0..20 {
        let batch: Vec<TcpStream> = (0..50).map(|_| raw_client(server.addr)).collect();
        drop(batch);
    }
    // 200 that send half a request and stall.
    let half = &upgrade_request("")[..40];
    let stalled: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(half.as_bytes()).unwrap();
            s
        })
        .collect();
    // The handshake timeout cuts them all off.
    for mut s in stalled {
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(
        server.wait_for_threads(baseline),
        "threads {} vs baseline {baseline}",
        server.threads()
    );
    // The table is empty: the next client is the only one.
    let mut fresh = raw_client(server.addr);
    assert!(server.wait_for_log("connected (1 client)"));
    fresh
        .write_all(&client_frame(TEXT, b"anyone?", true))
        .unwrap();
    let frame = read_frame(&mut fresh).unwrap();
    assert!(frame.payload.ends_with(b": anyone?"));
}

/// A message's payload: who sent it, its number, and filler of a known
/// pattern, so a receiver can check it is whole and unmixed.
fn payload(sender: usize, seq: usize, len: usize) -> Vec<u8> {
    let mut data = format!("{sender}:{seq}:").into_bytes();
    data.extend((0..len).map(|i| b'a' + ((sender + seq + i) % 26) as u8));
    data
}

/// Splits a received payload (text lines carry an `ID<port>: ` prefix) and
/// checks its filler; returns (sender, seq).
fn check(data: &[u8]) -> (usize, usize) {
    let data = match data.iter().position(|&b| b == b' ') {
        Some(i) if data.starts_with(b"ID") => &data[i + 1..],
        _ => data,
    };
    let text = std::str::from_utf8(data).expect("valid UTF-8");
    let mut parts = text.splitn(3, ':');
    let sender: usize = parts.next().unwrap().parse().unwrap();
    let seq: usize = parts.next().unwrap().parse().unwrap();
    let filler = parts.next().unwrap().as_bytes();
    assert_eq!(
        data,
        &payload(sender, seq, filler.len())[..],
        "corrupt message"
    );
    (sender, seq)
}

#[test]
fn heavy_mixed_load_delivers_every_message_once_in_order() {
    const SENDERS: usize = 6;
    const LISTENERS: usize = 10;
    const MESSAGES: usize = 150;
    // Each sender keeps at most this many of its messages in flight, as a
    // chat client does. A sender that floods faster than the others can
    // read fills their queues past the slow-client budget, and they are
    // dropped: a broadcast never waits for a reader (the contract).
    const WINDOW: usize = 4;
    let server = ServerProcess::start(&["--max-message", "300000"]);
    let total = SENDERS * MESSAGES;
    let clients: Vec<TcpStream> = (0..SENDERS + LISTENERS)
        .map(|_| raw_client(server.addr))
        .collect();
    let mut readers = Vec::new();
    for (index, stream) in clients.into_iter().enumerate() {
        let mut writer = stream.try_clone().unwrap();
        // How many of its own messages this client has received back.
        let own_received = Arc::new(AtomicUsize::new(0));
        if index < SENDERS {
            let own_received = Arc::clone(&own_received);
            thread::spawn(move || {
                for seq in 0..MESSAGES {
                    while seq - own_received.load(Ordering::SeqCst) >= WINDOW {
                        thread::sleep(Duration::from_millis(1));
                    }
                    // Small and large, text and binary, mixed.
                    let len = [3, 100, 2_000, 70_000, 250_000][(seq * 7 + index) % 5];
                    let first = if seq % 3 == 0 { BINARY } else { TEXT };
                    writer
                        .write_all(&client_frame(first, &payload(index, seq, len), true))
                        .unwrap();
                }
            });
        }
        let mut stream = stream;
        readers.push(thread::spawn(move || {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut next: HashMap<usize, usize> = HashMap::new();
            for _ in 0..total {
                let frame = read_frame(&mut stream).expect("every message");
                let (sender, seq) = check(&frame.payload);
                let expected = next.entry(sender).or_insert(0);
                assert_eq!(seq, *expected, "sender {sender} out of order or duplicated");
                *expected += 1;
                if sender == index {
                    own_received.fetch_add(1, Ordering::SeqCst);
                }
            }
            next
        }));
    }
    for reader in readers {
        let next = reader.join().expect("a receiver failed");
        assert_eq!(next.len(), SENDERS);
        assert!(next.values().all(|&n| n == MESSAGES), "{next:?}");
    }
}
