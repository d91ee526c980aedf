//! The chat room over real sockets, with tungstenite clients: the `ID<port>: `
//! prefix, broadcast to everyone, ordering under concurrency, and clients
//! that vanish or stop reading.

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};
use wschat::config::Config;
use wschat::server::{Server, start};

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// A chat server in this process, so the test can look at its client table.
fn chat_server(adjust: impl FnOnce(&mut Config)) -> (String, Arc<Server>) {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    adjust(&mut config);
    let (addr, server) = start(config).expect("start server");
    (format!("ws://{addr}/"), server)
}

fn client(url: &str) -> Client {
    let (ws, _) = tungstenite::connect(url).expect("connect");
    if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    ws
}

/// The client's own port, which names it in the chat.
fn port(ws: &Client) -> u16 {
    match ws.get_ref() {
        MaybeTlsStream::Plain(stream) => stream.local_addr().unwrap().port(),
        _ => unreachable!("plain TCP only"),
    }
}

fn read_text(ws: &mut Client) -> String {
    match ws.read().expect("a message") {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Waits up to five seconds for `condition`.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Connects `n` clients and waits until the server has all of them.
fn clients(url: &str, server: &Server, n: usize) -> Vec<Client> {
    let before = server.client_count();
    let all: Vec<Client> = (0..n).map(|_| client(url)).collect();
    assert!(eventually(|| server.client_count() == before + n));
    all
}

#[test]
fn text_is_prefixed_with_the_senders_real_port() {
    let (url, server) = chat_server(|_| {});
    let mut all = clients(&url, &server, 1);
    let ws = &mut all[0];
    let expected = format!("ID{}: hello, room", port(ws));
    ws.send(Message::text("hello, room")).unwrap();
    assert_eq!(read_text(ws), expected);
}

#[test]
fn everyone_including_the_sender_receives_each_message() {
    let (url, server) = chat_server(|_| {});
    let mut all = clients(&url, &server, 3);
    let sender_port = port(&all[1]);
    all[1].send(Message::text("to everyone")).unwrap();
    for ws in &mut all {
        assert_eq!(read_text(ws), format!("ID{sender_port}: to everyone"));
    }
}

#[test]
fn binary_is_relayed_unchanged_to_everyone() {
    let (url, server) = chat_server(|_| {});
    let mut all = clients(&url, &server, 3);
    let data: Vec<u8> = (0..70_000).map(|i| (i % 256) as u8).collect();
    all[0].send(Message::binary(data.clone())).unwrap();
    for ws in &mut all {
        assert_eq!(ws.read().unwrap(), Message::binary(data.clone()));
    }
}

#[test]
fn twenty_clients_sending_300_messages_each_at_once() {
    const CLIENTS: usize = 20;
    const MESSAGES: usize = 300;
    let (url, server) = chat_server(|_| {});
    let all = clients(&url, &server, CLIENTS);
    let ports: Vec<u16> = all.iter().map(port).collect();
    let handles: Vec<_> = all
        .into_iter()
        .map(|mut ws| {
            thread::spawn(move || {
                for i in 0..MESSAGES {
                    ws.send(Message::text(format!("msg {i}"))).unwrap();
                }
                // Every message from every sender, each sender's in order.
                let mut next = std::collections::HashMap::<String, usize>::new();
                for _ in 0..CLIENTS * MESSAGES {
                    let text = read_text(&mut ws);
                    let (id, body) = text.split_once(": ").expect("ID prefix");
                    let n: usize = body.strip_prefix("msg ").unwrap().parse().unwrap();
                    let expected = next.entry(id.to_string()).or_insert(0);
                    assert_eq!(n, *expected, "out of order from {id}");
                    *expected += 1;
                }
                next
            })
        })
        .collect();
    for handle in handles {
        let seen = handle.join().expect("client thread");
        assert_eq!(seen.len(), CLIENTS);
        for port in &ports {
            assert_eq!(seen.get(&format!("ID{port}")), Some(&MESSAGES));
        }
    }
}

#[test]
fn client_killed_without_close_frame_leaves_the_table() {
    let (url, server) = chat_server(|_| {});
    let mut stay = clients(&url, &server, 1);
    let gone = clients(&url, &server, 2);
    assert_eq!(server.client_count(), 3);
    drop(gone); // TCP closed without a close frame.
    assert!(
        eventually(|| server.client_count() == 1),
        "table: {}",
        server.client_count()
    );
    assert!(
        eventually(|| server.connections() == 1),
        "threads: {}",
        server.connections()
    );
    // The one left still chats.
    let expected = format!("ID{}: alone now", port(&stay[0]));
    stay[0].send(Message::text("alone now")).unwrap();
    assert_eq!(read_text(&mut stay[0]), expected);
}

#[test]
fn each_client_thread_ends_when_its_client_vanishes() {
    let server = common::ServerProcess::start(&[]);
    let baseline = server.threads();
    let all: Vec<Client> = (0..5).map(|_| client(&server.url())).collect();
    // One thread each: a writer thread exists only while a client's socket
    // is full.
    assert!(
        server.wait_for_threads(baseline + 5),
        "threads: {}",
        server.threads()
    );
    drop(all); // no close frames
    assert!(
        server.wait_for_threads(baseline),
        "threads: {}",
        server.threads()
    );
}

#[test]
fn a_client_that_never_reads_does_not_stop_the_others() {
    let (url, server) = chat_server(|c| c.write_timeout = Duration::from_secs(1));
    let mut all = clients(&url, &server, 2);
    let _stuck = clients(&url, &server, 1); // connected, never reads
    let big = "x".repeat(64 * 1024);
    let started = Instant::now();
    let mut sender = all.remove(0);
    let mut reader = all.remove(0);
    let watch = Arc::clone(&server);
    // Send until the stuck client's buffers are full and it has been
    // dropped (how much fits depends on the kernel), then say "done".
    let sending = thread::spawn(move || {
        let mut sent = 0;
        while sent < 50 || (watch.client_count() == 3 && sent < 2000) {
            sender.send(Message::text(format!("{sent} {big}"))).unwrap();
            read_text(&mut sender); // its own copy
            sent += 1;
        }
        sender.send(Message::text("done")).unwrap();
        (sent, sender)
    });
    // The reader gets every message, in order, while that happens.
    let mut received = 0;
    loop {
        let text = read_text(&mut reader);
        if text.ends_with(": done") {
            break;
        }
        assert!(
            text.contains(&format!(": {received} x")),
            "message {received} missing"
        );
        received += 1;
    }
    let (sent, _sender) = sending.join().unwrap();
    assert_eq!(received, sent);
    assert_eq!(server.client_count(), 2, "stuck client not dropped");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the room stalled: {:?}",
        started.elapsed()
    );
}
