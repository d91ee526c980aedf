//! The small programs of chapter 9, "Common mistakes".
//!
//! The seed tutorials are not in this repository, so their servers cannot
//! be rerun here. What can be rerun is each of their shortcuts, written
//! again for wschat from the client's side (every mistake a server can make
//! in reading or writing frames, a client can make too), and run against a
//! real wschat: what the shortcut makes of wschat's bytes, and what wschat
//! makes of the shortcut's. `tests/docs.rs` runs these programs and checks
//! that chapter 9 shows exactly what they print today.

use super::common::*;
use super::{KEY, hex_frame, masked};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use wschat::frame::{FrameHeader, Role, hex};
use wschat::message::{Event, Message, MessageReader};

/// How long "nothing came back" waits before it says so.
const QUIET: Duration = Duration::from_millis(300);

/// Section 1's shortcut: the bytes of one `read()` are taken to be one whole
/// frame. It finds the payload length as the seeds' readers do (all three
/// forms of §5.2), takes the payload from what it has, and never looks at
/// the opcode (server frames are not masked, so there is no key to find).
fn shortcut_decode(data: &[u8]) -> (usize, usize, &[u8]) {
    let (payload_len, start) = match data.get(1).map(|b| b & 0x7f) {
        Some(126) if data.len() >= 4 => (usize::from(u16::from_be_bytes([data[2], data[3]])), 4),
        Some(127) if data.len() >= 10 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&data[2..10]);
            (u64::from_be_bytes(len) as usize, 10)
        }
        Some(len) => (usize::from(len), 2),
        None => (0, data.len()),
    };
    let end = start.saturating_add(payload_len).min(data.len());
    (payload_len, start, &data[start.min(end)..end])
}

/// A payload as the reader of chapter 9 sees it: text, shortened.
fn shown(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    if text.chars().count() > 24 {
        let start: String = text.chars().take(20).collect();
        format!("\"{start}…\" ({} bytes)", payload.len())
    } else {
        format!("{text:?}")
    }
}

/// What wschat's own reader (client role) makes of the same reads.
fn messages_from(reads: &[&[u8]]) -> String {
    let mut reader = MessageReader::new(Role::Client, 1 << 20, "reader");
    let mut found = Vec::new();
    for bytes in reads {
        for event in reader.read(bytes) {
            match event {
                Ok(Event::Message(Message::Text(text))) => found.push(shown(text.as_bytes())),
                Ok(other) => found.push(format!("{other:?}")),
                Err(e) => found.push(format!("error: {e}")),
            }
        }
    }
    found.join(", then ")
}

/// Reads once, as the seeds do, with a buffer of 1024 bytes.
fn read_once(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).expect("a read");
    buf[..n].to_vec()
}

/// Chapter 9, section 1: one `read()` is not one frame.
pub fn one_read_as_one_frame(server: &ServerProcess) -> String {
    let mut reader = raw_client(server.addr);
    let mut sender = raw_client(server.addr);
    assert!(server.wait_for_log("connected (2 clients)"));
    let mut out = String::new();

    // Two messages in one write: wschat sends both broadcasts to each
    // client with one system call, so they arrive in one read.
    let two = [masked(TEXT, KEY, b"one"), masked(TEXT, KEY, b"two")].concat();
    sender.write_all(&two).expect("send");
    let data = read_once(&mut reader);
    let (_, start, payload) = shortcut_decode(&data);
    out.push_str(&format!(
        "another client sends \"one\" and \"two\" in one write\n\
         \x20 one read() returns {} bytes, starting {}\n\
         \x20 the shortcut:      {}, and {} bytes it never looks at\n\
         \x20 wschat's reader:   {}\n",
        data.len(),
        hex(&data[..2], " "),
        shown(payload),
        data.len() - start - payload.len(),
        messages_from(&[&data]),
    ));

    // A message longer than the buffer: the rest comes in the next read.
    sender
        .write_all(&masked(TEXT, KEY, &[b'x'; 2000]))
        .expect("send");
    let first = read_once(&mut reader);
    let second = read_once(&mut reader);
    out.push_str("another client sends 2000 times \"x\"\n");
    for (i, data) in [&first, &second].into_iter().enumerate() {
        let (payload_len, _, payload) = shortcut_decode(data);
        out.push_str(&format!(
            "  read() {} returns {} bytes, starting {}\n\
             \x20   the shortcut sees a header saying {payload_len} bytes, and shows {}\n",
            i + 1,
            data.len(),
            hex(&data[..4], " "),
            shown(payload),
        ));
        match FrameHeader::parse(data) {
            Ok(Some((header, _))) => {
                out.push_str(&format!("    that header, read properly: {header}\n"))
            }
            Ok(None) => {}
            Err(e) => out.push_str(&format!("    that header, read properly: an error, {e}\n")),
        }
    }
    out.push_str(&format!(
        "  wschat's reader, given both reads: {}\n",
        messages_from(&[&first, &second])
    ));
    out
}

/// What the server sent back, until it closed or went quiet.
fn answers(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(QUIET)).expect("timeout");
    let mut seen = Vec::new();
    loop {
        match read_frame(stream) {
            Ok(frame) if frame.first_byte == CLOSE => {
                let code = frame.close_code().unwrap_or(0);
                let reason = String::from_utf8_lossy(&frame.payload[2..]).into_owned();
                seen.push(format!("close {code} {reason:?}"));
                return seen.join(", then ");
            }
            Ok(frame) => seen.push(format!("an echo of {} bytes", frame.payload.len())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                seen.push(format!("nothing for {} ms", QUIET.as_millis()));
                return seen.join(", then ");
            }
            Err(e) => {
                seen.push(format!("{e}"));
                return seen.join(", then ");
            }
        }
    }
}

/// Chapter 9, section 2: the seeds' writer puts the length in one byte.
/// A client must also set the MASK bit (§5.1), so its one byte is
/// `0x80 | length`, cut to 8 bits; `as u8` cuts silently where Python 2
/// raises.
pub fn length_in_one_byte(server: &ServerProcess) -> String {
    let mut out = format!(
        "{:<7} {:<7} {:<40} {}\n",
        "length", "header", "how wschat reads that header", "what wschat sends back"
    );
    for len in [125usize, 126, 127, 200] {
        let text = vec![b'y'; len];
        let mut frame = masked(TEXT, KEY, &text);
        let header_len = frame.len() - len - 4;
        // The shortcut's header: 0x81, then the length in one byte.
        frame.splice(..header_len, [TEXT, 0x80 | len as u8]);
        let read_as = match FrameHeader::parse(&frame) {
            Ok(Some((header, _))) => format!(
                "payload_len={} ({})",
                header.payload_len,
                if len == header.payload_len as usize {
                    "right"
                } else {
                    "wrong"
                }
            ),
            Ok(None) => "incomplete".into(),
            Err(e) => format!("{e}"),
        };
        let mut stream = raw_client(server.addr);
        stream.write_all(&frame).expect("send");
        out.push_str(&format!(
            "{len:<7} {:<7} {read_as:<40} {}\n",
            hex(&frame[..2], " "),
            answers(&mut stream)
        ));
    }
    out
}

/// Chapter 9, section 3: a loop that never looks at the opcode, nor at a
/// read of zero bytes (the end of the stream).
pub fn loop_without_close(server: &ServerProcess) -> String {
    let mut leaving = raw_client(server.addr);
    let mut other = raw_client(server.addr);
    assert!(server.wait_for_log("connected (2 clients)"));
    leaving
        .write_all(&masked(CLOSE, KEY, b"\x03\xe8bye"))
        .expect("send");
    let mut out = String::from("a client sends close 1000 \"bye\"; its loop reads on:\n");
    for round in 1..=4 {
        let data = read_once(&mut leaving);
        let (_, _, payload) = shortcut_decode(&data);
        if data.is_empty() {
            out.push_str(&format!(
                "  read() {round}: 0 bytes (the server has closed TCP); the loop takes it for a frame\n"
            ));
        } else {
            out.push_str(&format!(
                "  read() {round}: {}; the loop shows it as text: {}\n",
                hex_frame(&data),
                shown(payload)
            ));
        }
    }
    out.push_str("  ... and so on for ever: nothing in the loop ends it\n");
    other.set_read_timeout(Some(QUIET)).expect("timeout");
    let mut buf = [0u8; 64];
    let got = match other.read(&mut buf) {
        Ok(n) => format!("{n} bytes"),
        Err(_) => format!("nothing for {} ms", QUIET.as_millis()),
    };
    out.push_str(&format!("the other client received: {got}\n"));
    out
}

/// Chapter 9, section 4: requests the seeds answer with a 101 without
/// looking, sent to wschat.
pub fn unchecked_handshakes(server: &ServerProcess) -> String {
    let base = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8002\r\n";
    let cases = [
        (
            "version 8",
            format!(
                "{base}Connection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\r\n"
            ),
        ),
        (
            "version 13, key \"abc\"",
            format!(
                "{base}Connection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n"
            ),
        ),
        (
            "a valid request, header names in lowercase",
            format!(
                "GET / HTTP/1.1\r\nhost: 127.0.0.1:8002\r\nconnection: Upgrade\r\n\
                 upgrade: websocket\r\nsec-websocket-version: 13\r\n\
                 sec-websocket-key: {SAMPLE_KEY}\r\n\r\n"
            ),
        ),
        (
            "a browser asking for /favicon.ico",
            "GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1:8002\r\n\r\n".to_string(),
        ),
    ];
    let mut out = String::new();
    for (what, request) in cases {
        let mut stream = connect(server.addr);
        let (head, body) = http_exchange(&mut stream, request.as_bytes());
        let status_line = head.lines().next().unwrap_or("");
        let detail = head
            .lines()
            .find(|l| l.starts_with("Sec-WebSocket-Accept"))
            .map(str::to_string)
            .unwrap_or(body.trim_end().to_string());
        out.push_str(&format!("{what}\n  {status_line}\n  {detail}\n"));
    }
    // None of them joined the room: a chat client is alone in it.
    let mut member = raw_client(server.addr);
    member
        .write_all(&masked(TEXT, KEY, b"anyone?"))
        .expect("send");
    let echo = read_frame(&mut member).expect("the broadcast");
    out.push_str(&format!(
        "then a chat client joins and sends \"anyone?\"\n  it receives {}\n",
        shown(&echo.payload)
    ));
    out
}

/// Chapter 9, section 6: a connection that has not finished its handshake
/// is not in the room yet, so nothing can reach it before its 101.
pub fn joined_before_the_handshake(server: &ServerProcess) -> String {
    let mut early = connect(server.addr);
    let mut speaker = raw_client(server.addr);
    assert!(server.wait_for_log("connected (1 client)"));
    speaker.write_all(&masked(TEXT, KEY, b"hi")).expect("send");
    read_frame(&mut speaker).expect("own broadcast");
    let (head, _) = http_exchange(&mut early, upgrade_request("").as_bytes());
    let mut out = format!(
        "a client connects but waits before sending its request; another says \"hi\"\n\
         \x20 the waiting client sends its request; the first line it receives: {}\n",
        head.lines().next().unwrap_or("")
    );
    assert!(server.wait_for_log("connected (2 clients)"));
    out.push_str(&format!("  then: {}\n", answers(&mut early)));
    speaker
        .write_all(&masked(TEXT, KEY, b"hi again"))
        .expect("send");
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let frame = read_frame(&mut early).expect("the broadcast");
    out.push_str(&format!(
        "  the other says \"hi again\"; it receives {}\n",
        shown(&frame.payload)
    ));
    out
}
