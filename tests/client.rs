//! `wschat connect`, the client, from outside: the real binary against
//! wschat's own server, against tungstenite's server, and against raw-socket
//! servers that each break one rule.

mod common;

use common::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A running `wschat connect`, its stdout read line by line.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
}

impl ClientProcess {
    fn start(args: &[&str]) -> ClientProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .arg("connect")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wschat connect");
        let stdin = child.stdin.take();
        let lines = read_lines(child.stdout.take().expect("stdout"));
        let stderr = read_lines(child.stderr.take().expect("stderr"));
        ClientProcess {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the client's stdin");
    }

    /// The next line the client prints on stdout.
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line from the client")
    }

    /// Ends stdin: the client starts the closing handshake.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the client to exit; its status and everything on stderr.
    fn wait(self) -> (ExitStatus, String) {
        self.wait_up_to(WAIT)
    }

    /// [`wait`](Self::wait), for at most `limit`.
    fn wait_up_to(mut self, limit: Duration) -> (ExitStatus, String) {
        self.close_stdin();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the client did not exit");
            thread::sleep(Duration::from_millis(20));
        };
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        (status, stderr.join("\n"))
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thread that sends each line of `output` down a channel.
fn read_lines(output: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn two_clients_chat_through_wschat() {
    let server = ServerProcess::start(&[]);
    let url = format!("ws://{}/", server.addr);
    let mut a = ClientProcess::start(&[&url]);
    assert!(server.wait_for_log("connected (1 client)"));
    let mut b = ClientProcess::start(&[&url]);
    assert!(server.wait_for_log("connected (2 clients)"));

    a.send_line("hello from A, κόσμε");
    let line = a.next_line();
    assert!(
        line.starts_with("ID") && line.ends_with(": hello from A, κόσμε"),
        "{line}"
    );
    assert_eq!(b.next_line(), line);
    b.send_line("and back from B");
    let from_b = a.next_line();
    assert!(from_b.ends_with(": and back from B"), "{from_b}");
    assert_ne!(from_b.split(':').next(), line.split(':').next());
    assert_eq!(b.next_line(), from_b);

    // The end of stdin closes with 1000; the server closes TCP; exit 0.
    let (status, stderr) = a.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(server.wait_for_log("closed by client with 1000"));
    let (status, stderr) = b.wait();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn a_stopping_server_ends_the_client_cleanly() {
    let server = ServerProcess::start(&[]);
    let client = ClientProcess::start(&[&format!("ws://{}/", server.addr)]);
    assert!(server.wait_for_log("connected (1 client)"));
    server.signal("TERM");
    // Stdin stays open: it is the server that begins the closing handshake.
    let deadline = Instant::now() + WAIT;
    let mut client = client;
    let status = loop {
        if let Some(status) = client.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the client did not exit");
        thread::sleep(Duration::from_millis(20));
    };
    let stderr: Vec<String> = client.stderr.try_iter().collect();
    assert!(status.success(), "{status}: {stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("closed by the server with 1001")),
        "{stderr:?}"
    );
}

/// tungstenite's server, as an independent peer: it chooses `chat`, echoes
/// what it reads, and also sends a binary message and a ping of its own.
#[test]
#[allow(clippy::result_large_err)] // tungstenite's callback type, not ours
fn against_tungstenite_server() {
    use tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let choose_chat =
            |request: &tungstenite::handshake::server::Request,
             mut response: tungstenite::handshake::server::Response| {
                let offered = request
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                assert_eq!(offered.as_deref(), Some("chat"));
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", "chat".parse().unwrap());
                Ok(response)
            };
        let mut ws = tungstenite::accept_hdr(stream, choose_chat).unwrap();
        let mut seen = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    seen.push(text.to_string());
                    ws.send(Message::Text(text)).unwrap();
                    ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
                    ws.send(Message::Ping(b"are you there".to_vec().into()))
                        .unwrap();
                }
                Ok(Message::Pong(payload)) => seen.push(format!("pong {:?}", payload.as_ref())),
                Ok(Message::Close(frame)) => {
                    seen.push(format!("close {:?}", frame.map(|f| u16::from(f.code))));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        seen
    });
    let mut client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    client.send_line("hello tungstenite");
    assert_eq!(client.next_line(), "hello tungstenite");
    assert_eq!(client.next_line(), "[binary 3 bytes]");
    // Give the pong time to go out before the close.
    thread::sleep(Duration::from_millis(200));
    let (status, stderr) = client.wait();
    assert!(status.success(), "{status}: {stderr}");
    let seen = peer.join().unwrap();
    assert_eq!(
        seen,
        [
            "hello tungstenite",
            &format!("pong {:?}", b"are you there"),
            "close Some(1000)"
        ]
    );
}

#[test]
fn echo_mode_sends_back_text_as_text_and_binary_as_binary() {
    use tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = ClientProcess::start(&["--echo", &format!("ws://{addr}/")]);
    let (stream, _) = listener.accept().unwrap();
    let mut ws = tungstenite::accept(stream).unwrap();
    let sent = [
        Message::Text("κόσμε".into()),
        Message::Binary(vec![0, 255, 7].into()),
        Message::Text("x".repeat(70_000).into()),
    ];
    for message in &sent {
        ws.send(message.clone()).unwrap();
        assert_eq!(&ws.read().unwrap(), message);
    }
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    let (status, stderr) = client.wait();
    assert!(status.success(), "{status}: {stderr}");
}

/// A client frame read by hand: opcode byte, masking key, unmasked payload.
fn read_client_frame(stream: &mut TcpStream) -> (u8, Option<[u8; 4]>, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let key = (head[1] & 0x80 != 0).then(|| {
        let mut k = [0u8; 4];
        stream.read_exact(&mut k).unwrap();
        k
    });
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    (head[0], key, payload)
}

/// Each misbehaving answer: the client exits 1 with a reason naming the
/// rule (§4.1's checks are numbered in the RFC).
#[test]
fn a_bad_handshake_answer_is_refused_with_the_rule_it_breaks() {
    /// The rule, and the answer that breaks it, given the client's key.
    type Case = (&'static str, fn(&str) -> String);
    let cases: [Case; 5] = [
        ("check 1", |_| {
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
        }),
        ("check 4", |_| {
            switching("dGhlIHNhbXBsZSBub25jZQ==", "") // the accept of another key
        }),
        ("check 6", |key| {
            switching(key, "Sec-WebSocket-Protocol: superchat\r\n")
        }),
        ("check 5", |key| {
            switching(key, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
        }),
        ("check 2", |key| {
            switching(key, "").replace("Upgrade: websocket\r\n", "")
        }),
    ];
    for (rule, response) in cases {
        let (addr, server) = raw_server(move |mut stream, key| {
            stream.write_all(response(&key).as_bytes()).unwrap();
            thread::sleep(Duration::from_millis(300));
        });
        let client = ClientProcess::start(&[&format!("ws://{addr}/")]);
        let (status, stderr) = client.wait();
        assert_eq!(status.code(), Some(1), "{rule}: {stderr}");
        assert!(stderr.contains(rule), "{rule}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        server.join().unwrap();
    }
}

#[test]
fn a_masked_server_frame_gets_close_1002_and_exit_1() {
    let (addr, server) = raw_server(|mut stream, key| {
        stream.write_all(switching(&key, "").as_bytes()).unwrap();
        // §5.1: "A server MUST NOT mask any frames that it sends".
        stream
            .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
            .unwrap();
        read_client_frame(&mut stream)
    });
    let client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    let (status, stderr) = client.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("masked"), "{stderr}");
    let (opcode, key, payload) = server.join().unwrap();
    assert_eq!(opcode, 0x88);
    assert!(key.is_some(), "the close frame must be masked too");
    assert_eq!(payload[..2], 1002u16.to_be_bytes());
}

#[test]
fn a_close_without_a_code_is_a_clean_end() {
    let (addr, server) = raw_server(|mut stream, key| {
        stream.write_all(switching(&key, "").as_bytes()).unwrap();
        stream.write_all(&[0x88, 0x00]).unwrap();
        let reply = read_client_frame(&mut stream);
        // The server closes TCP first; the client has waited for it.
        drop(stream);
        reply
    });
    let mut client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    let (opcode, _, payload) = server.join().unwrap();
    assert_eq!((opcode, payload.len()), (0x88, 0), "an empty close back");
    client.stdin = None;
    let (status, stderr) = client.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("without a code (1005)"), "{stderr}");
}

#[test]
fn a_server_that_never_closes_tcp_is_closed_after_a_timeout() {
    let (addr, server) = raw_server(|mut stream, key| {
        stream.write_all(switching(&key, "").as_bytes()).unwrap();
        let (opcode, _, payload) = read_client_frame(&mut stream);
        assert_eq!((opcode, &payload[..]), (0x88, &[0x03, 0xe8][..]));
        stream.write_all(&[0x88, 0x02, 0x03, 0xe8]).unwrap();
        // Keep TCP open, and see when the client closes it.
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).unwrap_or(0);
        (n, started.elapsed())
    });
    let client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    let (status, stderr) = client.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("did not close TCP"), "{stderr}");
    let (n, waited) = server.join().unwrap();
    assert_eq!(n, 0, "the client closes TCP, sending nothing more");
    assert!(
        waited >= Duration::from_secs(1),
        "it waited first: {waited:?}"
    );
}

#[test]
fn a_server_that_drops_tcp_without_a_close_frame_is_a_failure() {
    let (addr, server) = raw_server(|mut stream, key| {
        stream.write_all(switching(&key, "").as_bytes()).unwrap();
    });
    let client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    server.join().unwrap();
    let (status, stderr) = client.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1006"), "{stderr}");
}

/// Keys seen from outside: the handshake key is 16 random bytes, every frame
/// is masked, and no two keys repeat, within a run or across runs.
#[test]
fn every_frame_is_masked_with_a_fresh_key() {
    let mut frame_keys = HashSet::new();
    let mut handshake_keys = HashSet::new();
    for run in 0..2 {
        let (addr, server) = raw_server(|mut stream, key| {
            stream.write_all(switching(&key, "").as_bytes()).unwrap();
            let mut frames = Vec::new();
            loop {
                let frame = read_client_frame(&mut stream);
                let close = frame.0 == 0x88;
                frames.push(frame);
                if close {
                    stream.write_all(&[0x88, 0x02, 0x03, 0xe8]).unwrap();
                    return (key, frames);
                }
            }
        });
        let mut client = ClientProcess::start(&[&format!("ws://{addr}/")]);
        for i in 0..20 {
            client.send_line(&format!("message {i} of run {run}"));
        }
        let (key, frames) = {
            client.close_stdin();
            server.join().unwrap()
        };
        let (status, stderr) = client.wait();
        assert!(status.success(), "{status}: {stderr}");
        use base64::Engine;
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(nonce.len(), 16);
        assert!(handshake_keys.insert(key), "a handshake key repeated");
        assert_eq!(frames.len(), 21);
        for (i, (opcode, mask, payload)) in frames.iter().enumerate() {
            let mask = mask.expect("every client frame masked (§5.3)");
            assert!(frame_keys.insert(mask), "masking key {mask:02x?} repeated");
            if i < 20 {
                assert_eq!(*opcode, 0x81);
                assert_eq!(payload, format!("message {i} of run {run}").as_bytes());
            }
        }
    }
    assert_eq!(frame_keys.len(), 42);
}

#[test]
fn usage_errors_exit_2_and_connection_errors_exit_1() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .arg("connect")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["wss://example.com/"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("TLS") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(run(&[]).0, Some(2));
    assert_eq!(run(&["--bogus", "ws://x/"]).0, Some(2));
    // A port nobody listens on: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stderr) = run(&[&format!("ws://127.0.0.1:{port}/")]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn a_server_that_never_answers_our_close_is_a_failure() {
    let (addr, server) = raw_server(|mut stream, key| {
        stream.write_all(switching(&key, "").as_bytes()).unwrap();
        let close = read_client_frame(&mut stream);
        // No close frame back; TCP stays open until the client gives up.
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).unwrap_or(0);
        (close.0, n)
    });
    let started = Instant::now();
    let client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    let (status, stderr) = client.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not answer our close within 2 s"),
        "{stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(server.join().unwrap(), (0x88, 0));
}

#[test]
fn an_answer_trickled_a_byte_at_a_time_is_given_up_on() {
    let (addr, server) = raw_server(|mut stream, _| {
        // A byte every 300 ms, forever: each read succeeds, the answer
        // never ends.
        for byte in b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
    });
    let started = Instant::now();
    let client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    let (status, stderr) = client.wait_up_to(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no complete answer within 10 s"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(13));
    server.join().unwrap();
}

/// A server that reads nothing at all: the client's writes block, and the
/// client gives up after its write timeout, 10 s in all, not per write.
#[test]
fn a_server_that_never_reads_is_given_up_on_after_the_write_timeout() {
    let (addr, server) = raw_server(|mut stream, key| {
        stream.write_all(switching(&key, "").as_bytes()).unwrap();
        // Read nothing more; hold the connection until the client leaves.
        stream.set_read_timeout(None).unwrap();
        thread::sleep(Duration::from_secs(20));
    });
    let mut client = ClientProcess::start(&[&format!("ws://{addr}/")]);
    let started = Instant::now();
    let line = "x".repeat(64 * 1024);
    // The lines pile up in the socket buffers until a write blocks; the
    // stdin pipe then fills too, so feed it from a thread of its own.
    let mut stdin = client.stdin.take().unwrap();
    thread::spawn(move || while writeln!(stdin, "{line}").is_ok() {});
    let (status, stderr) = client.wait_up_to(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has not read what we sent for 10 s"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    drop(server);
}

/// A message is printed as one line, whatever it holds: a newline cannot
/// make it pass for a line from someone else.
#[test]
fn a_message_with_a_newline_is_still_one_line() {
    let server = ServerProcess::start(&[]);
    let client = ClientProcess::start(&[&format!("ws://{}/", server.addr)]);
    assert!(server.wait_for_log("connected (1 client)"));
    let mut sender = raw_client(server.addr);
    sender
        .write_all(&client_frame(
            TEXT,
            b"hello\nID12345: I am someone else\x1b[2J",
            true,
        ))
        .unwrap();
    let line = client.next_line();
    assert!(
        line.ends_with(": hello\\nID12345: I am someone else\\u{1b}[2J"),
        "{line}"
    );
}

/// stderr a closed pipe: the client still says nothing it cannot, and
/// exits with its status, not a panic's.
#[test]
fn a_closed_stderr_does_not_crash_the_client() {
    let (addr, server) = raw_server(|mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_wschat"))
        .args(["connect", &format!("ws://{addr}/")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reading end, closed
    let status = child.wait().unwrap();
    server.join().unwrap();
    assert_eq!(status.code(), Some(1));
}
