//! Keeps the tutorial honest.
//!
//! 1. Every `src/...` path the docs mention exists, and every function they
//!    name as `name()` or `Type::name()` is defined in `src/` or `tests/`
//!    (or, for the page, in `www/index.html`).
//! 2. Every block between `<!-- sample: NAME -->` and `<!-- /sample -->` in
//!    `docs/*.md` is exactly what the sample NAME below produces today, by
//!    running wschat: bytes on the wire, log lines, computed values.
//!
//! After changing the server's output on purpose, regenerate the samples with
//! `WSCHAT_BLESS=1 cargo test --test docs` and read the diff.

mod common;
mod mistakes;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use wschat::frame::{OpCode, encode_frame, hex};
use wschat::handshake::{WEBSOCKET_GUID, accept_key};
use wschat::mask::apply_mask;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files that make up the documentation.
fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.push(root().join("README.md"));
    files.sort();
    files
}

/// All Rust source under src/ and tests/ (the docs name tests too), as one string.
fn all_source() -> String {
    let mut text = String::new();
    for dir in ["src", "tests", "tests/common", "tests/mistakes"] {
        for entry in fs::read_dir(root().join(dir)).unwrap().flatten() {
            if entry.path().extension().is_some_and(|x| x == "rs") {
                text.push_str(&fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    text
}

/// Inline code spans (`like this`) outside fenced blocks.
fn inline_spans(markdown: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let parts: Vec<&str> = line.split('`').collect();
        spans.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
    }
    spans
}

/// The lines of `markdown` that are not inside fenced code blocks.
fn outside_code_blocks(markdown: &str) -> String {
    let mut fenced = false;
    let mut text = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[test]
fn every_source_path_and_function_the_docs_name_exists() {
    let source = all_source();
    let page = fs::read_to_string(root().join("www/index.html")).unwrap();
    let mut missing = Vec::new();
    for file in doc_files() {
        let text = fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Paths such as src/frame.rs, anywhere in the text.
        for (i, _) in text.match_indices("src/") {
            let path: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/_.".contains(*c))
                .collect();
            let path = path.trim_end_matches('.');
            if path.ends_with(".rs") && !root().join(path).exists() {
                missing.push(format!("{name}: {path}"));
            }
        }
        // Functions written as `name()` or `Type::name()`.
        for span in inline_spans(&text) {
            let Some(call) = span.strip_suffix("()") else {
                continue;
            };
            let function = call.rsplit("::").next().unwrap_or(call);
            if !is_identifier(function) || call.contains('.') {
                continue;
            }
            // `Type::name()`: the type must exist too (a renamed type
            // leaves its methods' names behind).
            if let Some((owner, _)) = call.rsplit_once("::") {
                let owner = owner.rsplit("::").next().unwrap_or(owner);
                let defined = ["struct", "enum", "trait", "mod", "type"]
                    .iter()
                    .any(|kind| source.contains(&format!("{kind} {owner}")));
                if is_identifier(owner) && !defined && !page.contains(owner) {
                    missing.push(format!("{name}: `{span}` (no {owner})"));
                }
            }
            let in_rust = source.contains(&format!("fn {function}("))
                || source.contains(&format!("fn {function}<"));
            let in_page = page.contains(&format!("function {function}("));
            if !in_rust && !in_page {
                missing.push(format!("{name}: `{span}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name things that do not exist:\n{}",
        missing.join("\n")
    );
}

/// Every link into the glossary, `glossary.md#term`, has its `<a id="term">`,
/// and every link to a chapter names a file that exists.
#[test]
fn every_link_between_the_docs_leads_somewhere() {
    let glossary = fs::read_to_string(root().join("docs/glossary.md")).unwrap();
    let mut broken = Vec::new();
    for file in doc_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = outside_code_blocks(&fs::read_to_string(&file).unwrap());
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            if target.contains("://") || target.starts_with('#') || target.starts_with('<') {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let base = if name == "README.md" {
                root()
            } else {
                root().join("docs")
            };
            if !base.join(path).exists() {
                broken.push(format!("{name}: ({target}): no such file"));
            } else if path.ends_with("glossary.md")
                && !anchor.is_empty()
                && !glossary.contains(&format!("<a id=\"{anchor}\">"))
            {
                broken.push(format!("{name}: ({target}): no such term in the glossary"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

// ---------------------------------------------------------------------------
// Transcripts: log lines quoted from runs that a test cannot repeat (a
// browser, nginx) must still be lines wschat prints today.
// ---------------------------------------------------------------------------

/// Checks one trace line's frame description, `FIN=1 ... payload=[..]`, by
/// rebuilding the header from its fields and printing it again.
fn check_frame_line(frame: &str) -> Result<(), String> {
    let (header_text, payload) = frame.split_once(" payload=[").ok_or("no payload=[")?;
    let field = |name: &str| -> Result<&str, String> {
        header_text
            .split(' ')
            .find_map(|f| f.strip_prefix(name))
            .ok_or(format!("no {name}"))
    };
    let opcode_text = field("opcode=")?;
    let number = opcode_text
        .split("(0x")
        .nth(1)
        .and_then(|n| n.strip_suffix(')'))
        .ok_or("opcode")?;
    let opcode = OpCode::from_u8(u8::from_str_radix(number, 16).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mask = match field("key=") {
        Ok(key) => {
            let b = |i: usize| u8::from_str_radix(&key[i..i + 2], 16).unwrap_or(0);
            Some([b(0), b(2), b(4), b(6)])
        }
        Err(_) => None,
    };
    let header = wschat::frame::FrameHeader {
        fin: field("FIN=")? == "1",
        rsv: u8::from_str_radix(field("RSV=")?, 2).map_err(|e| e.to_string())?,
        opcode,
        mask,
        payload_len: field("payload_len=")?.parse().map_err(|_| "payload_len")?,
    };
    // Samples show a client's random masking keys as `????????`.
    let header_text = header_text.replace("key=????????", "key=00000000");
    if header.to_string() != header_text {
        return Err(format!("wschat would print {header}"));
    }
    let shown = payload
        .trim_end_matches(']')
        .trim_end_matches(" …")
        .split(' ')
        .filter(|b| !b.is_empty())
        .count();
    if shown as u64 != header.payload_len.min(16)
        || payload.contains('…') != (header.payload_len > 16)
    {
        return Err("payload preview does not match payload_len".into());
    }
    Ok(())
}

/// Checks the message of a quoted log line against the formats in src/.
fn check_log_message(target: &str, message: &str) -> Result<(), String> {
    if target == "wschat" {
        let ok = message.starts_with("wschat listening on ws://")
            && message.ends_with("/ in a browser to chat")
            || message.starts_with("wschat echo server listening on ws://");
        return if ok {
            Ok(())
        } else {
            Err("not a start-up line".into())
        };
    }
    if target == "wschat::client" {
        let known = [
            "request \"GET ",
            "response ",
            "connected to ws://",
            "closed with ",
            "closed by the server ",
            "the server did not close TCP",
        ];
        return if known.iter().any(|k| message.starts_with(k)) {
            Ok(())
        } else {
            Err("no such line in src/client.rs".into())
        };
    }
    let (id, rest) = message.split_at(message.find([' ', ':']).ok_or("no client id")?);
    if !id.starts_with("ID") || !id[2..].chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{id:?} is not a client id"));
    }
    if let Some(frame) = rest
        .strip_prefix(" -> ")
        .or_else(|| rest.strip_prefix(" <- "))
    {
        return check_frame_line(frame);
    }
    let known = [
        " connected (",
        " disconnected: closed by client with ",
        " disconnected: failed with ",
        " disconnected: no pong within the ping interval",
        " disconnected: connection dropped without a close frame",
        " disconnected: dropped by the server: ",
        ": handshake refused: ",
        ": refused: ",
        ": handshake not completed: ",
        ": closed without sending a request",
        ": GET / (the chat page)",
        ": HEAD / (the chat page)",
        ": request ",
        ": response \"HTTP/1.1 101 Switching Protocols",
        ": no thread for a new client, refused with 503: ",
        ": not delivered: ",
    ];
    if known.iter().any(|k| rest.starts_with(k)) {
        Ok(())
    } else {
        Err("no such line in src/".into())
    }
}

#[test]
fn every_quoted_log_line_is_one_wschat_prints_today() {
    let mut wrong = Vec::new();
    for file in doc_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for line in fs::read_to_string(&file).unwrap().lines() {
            // `[2026-11-21T20:47:05Z INFO  wschat::server] message`, the
            // timestamp optional.
            let Some(start) = ["TRACE ", "DEBUG ", "INFO  ", "WARN  ", "ERROR "]
                .iter()
                .find_map(|l| line.find(&format!("{l}wschat")))
            else {
                continue;
            };
            let Some((target, message)) = line[start + 6..].split_once("] ") else {
                continue;
            };
            if let Err(why) = check_log_message(target.trim(), message) {
                wrong.push(format!("{name}: {line}\n    {why}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "log lines wschat does not print (any more):\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Samples: output produced by running wschat now.
// ---------------------------------------------------------------------------

/// Log lines without their timestamps, and client ports replaced by fixed
/// ones in order of appearance (ID54321, ID54322, ...), so that a run today
/// reads the same as the run the docs were written from.
fn normalize(lines: &[String]) -> String {
    let mut ports: HashMap<String, String> = HashMap::new();
    let mut out = String::new();
    for line in lines {
        let line = match line.split_once("Z ") {
            Some((stamp, rest)) if stamp.starts_with('[') => format!("[{rest}"),
            _ => line.clone(),
        };
        let mut fixed = String::new();
        let mut rest = line.as_str();
        while let Some(i) = rest.find("ID") {
            fixed.push_str(&rest[..i]);
            let digits: String = rest[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if digits.is_empty() {
                fixed.push_str("ID");
            } else {
                let next = format!("ID{}", 54321 + ports.len());
                fixed.push_str(ports.entry(digits.clone()).or_insert(next));
            }
            rest = &rest[i + 2 + digits.len()..];
        }
        fixed.push_str(rest);
        // The listening port is chosen by the OS: show the default instead.
        let mut parts = fixed.split("127.0.0.1:");
        out.push_str(parts.next().unwrap_or(""));
        for part in parts {
            let port_len = part.chars().take_while(|c| c.is_ascii_digit()).count();
            out.push_str("127.0.0.1:8002");
            out.push_str(&part[port_len..]);
        }
        out.push('\n');
    }
    out
}

/// Waits for `needle` in the server's log, then returns the log, normalized,
/// keeping only lines that mention `keep`.
fn log_after(server: &ServerProcess, needle: &str, keep: &[&str]) -> String {
    normalize(&raw_log_after(server, needle, keep))
}

/// [`log_after`] without the normalizing, to add to other lines first.
fn raw_log_after(server: &ServerProcess, needle: &str, keep: &[&str]) -> Vec<String> {
    if !server.wait_for_log(needle) {
        let lines = server.log_lines();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        panic!("no {needle:?} in the log; it ends with:\n{tail}");
    }
    server
        .log_lines()
        .into_iter()
        .filter(|l| keep.iter().any(|k| l.contains(k)))
        .collect()
}

/// A program's output and then some of the log, normalized together, so
/// that a client has the same name in both.
fn with_log(output: String, server: &ServerProcess, needle: &str, keep: &[&str]) -> String {
    let mut lines: Vec<String> = output.lines().map(str::to_string).collect();
    lines.extend(raw_log_after(server, needle, keep));
    normalize(&lines)
}

/// A masked client frame with a given key (the docs show the key, so it is fixed).
fn masked(first_byte: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = client_frame(first_byte, payload, false);
    out[1] |= 0x80;
    let header_len = out.len() - payload.len();
    out.splice(header_len..header_len, key);
    apply_mask(&mut out[header_len + 4..], key, 0);
    out
}

/// Hex of a frame: all of it if short, else the header and a few bytes.
fn hex_frame(bytes: &[u8]) -> String {
    if bytes.len() <= 24 {
        hex(bytes, " ")
    } else {
        format!(
            "{} … ({} bytes in all)",
            hex(&bytes[..16], " "),
            bytes.len()
        )
    }
}

/// Reads exactly `n` bytes the server sends.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn sample_accept_key() -> String {
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    let digest = sha1.digest().bytes();
    format!(
        "Sec-WebSocket-Key:     {key}\n\
         key + GUID:            {key}{WEBSOCKET_GUID}\n\
         SHA-1 (20 bytes):      {}\n\
         base64 of the SHA-1:   {}\n",
        hex(&digest, " "),
        accept_key(key)
    )
}

const BROWSER_REQUEST: &str = "GET / HTTP/1.1\r\n\
    Host: 127.0.0.1:8002\r\n\
    Connection: Upgrade\r\n\
    Upgrade: websocket\r\n\
    Origin: http://127.0.0.1:8002\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn sample_handshake() -> String {
    let server = ServerProcess::start(&[]);
    let mut stream = connect(server.addr);
    let (head, _) = http_exchange(&mut stream, BROWSER_REQUEST.as_bytes());
    format!(
        "--- the request (as a browser sends it, with the RFC's sample key) ---\n{}\
         --- wschat's response ---\n{}",
        BROWSER_REQUEST.replace("\r\n", "\\r\\n\n"),
        head.replace("\r\n", "\\r\\n\n")
    )
}

fn sample_handshake_log() -> String {
    let server = ServerProcess::start(&[]);
    let mut stream = connect(server.addr);
    http_exchange(&mut stream, BROWSER_REQUEST.as_bytes());
    log_after(&server, "connected", &["request", "response", "connected"])
}

fn sample_frames_hex() -> String {
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = raw_client(server.addr);
    let mut out = String::new();
    let cases: [(&str, u8, Vec<u8>); 3] = [
        ("\"Hello\", 5 bytes: 7-bit length", TEXT, b"Hello".to_vec()),
        ("200 bytes of text: 16-bit length", TEXT, vec![b'a'; 200]),
        (
            "70000 bytes binary: 64-bit length",
            BINARY,
            vec![0xAB; 70_000],
        ),
    ];
    for (what, first, payload) in cases {
        let sent = masked(first, KEY, &payload);
        stream.write_all(&sent).unwrap();
        let mut expected = Vec::new();
        let opcode = if first == TEXT {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        encode_frame(opcode, &payload, &mut expected);
        let received = read_n(&mut stream, expected.len());
        assert_eq!(received, expected, "the server's echo");
        out.push_str(&format!(
            "{what}\n  client -> {}\n  server <- {}\n",
            hex_frame(&sent),
            hex_frame(&received)
        ));
    }
    out
}

fn sample_mask_table() -> String {
    let original = b"Hello";
    let mut masked = original.to_vec();
    apply_mask(&mut masked, KEY, 0);
    let mut out = String::from("i  byte        key[i % 4]   byte XOR key\n");
    for i in 0..original.len() {
        out.push_str(&format!(
            "{i}  {:02x} ('{}')    {:02x}           {:02x}\n",
            original[i],
            original[i] as char,
            KEY[i % 4],
            masked[i]
        ));
    }
    out
}

/// The bytes of chapter 10's bash session: every `printf '...' >&3` line
/// of the chapter, with its `\r`, `\n` and `\xNN` escapes decoded.
fn chapter_10_bash_bytes() -> Vec<u8> {
    let chapter = fs::read_to_string(root().join("docs/10-watching-and-stepping.md")).unwrap();
    let mut bytes = Vec::new();
    for line in chapter.lines() {
        let Some(quoted) = line
            .strip_prefix("printf '")
            .and_then(|l| l.strip_suffix("' >&3"))
        else {
            continue;
        };
        let mut rest = quoted;
        while let Some(c) = rest.chars().next() {
            if let Some(hex) = rest.strip_prefix("\\x") {
                bytes.push(u8::from_str_radix(&hex[..2], 16).expect("\\xNN"));
                rest = &hex[2..];
            } else if let Some(after) = rest.strip_prefix("\\r") {
                bytes.push(b'\r');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("\\n") {
                bytes.push(b'\n');
                rest = after;
            } else {
                bytes.extend(c.to_string().as_bytes());
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    bytes
}

/// Chapter 10's bash session, sent as its `printf` lines say.
fn sample_echo_trace() -> String {
    let server = ServerProcess::start_traced(&["--echo"]);
    let mut stream = connect(server.addr);
    let bytes = chapter_10_bash_bytes();
    // The request, §5.7's masked "Hello", a ping, then a close with "bye".
    let mut expected = BASH_REQUEST.as_bytes().to_vec();
    expected.extend(masked(TEXT, KEY, b"Hello"));
    expected.extend(masked(PING, [1, 2, 3, 4], b"are you there?"));
    expected.extend(masked(CLOSE, [5, 6, 7, 8], b"\x03\xe8bye"));
    assert_eq!(bytes, expected, "chapter 10's printf lines");
    stream.write_all(&bytes).unwrap();
    let (head, _) = read_http_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    expect_close(&mut stream);
    drop(stream);
    // Every line the server printed, the start-up line included.
    log_after(&server, "disconnected", &[""])
}

/// The request of chapter 10's bash session (and chapter 2's).
const BASH_REQUEST: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn sample_fragments_trace() -> String {
    let server = ServerProcess::start_traced(&["--echo"]);
    let mut stream = raw_client(server.addr);
    // "Hel" + ping + "lo", with a character cut in half: "κ" is ce ba.
    let mut bytes = masked(TEXT_START, KEY, b"Hel");
    bytes.extend(masked(PING, KEY, b"mid"));
    bytes.extend(masked(CONT, KEY, b"lo \xce"));
    bytes.extend(masked(CONT_FIN, KEY, b"\xba"));
    stream.write_all(&bytes).unwrap();
    read_frame(&mut stream).unwrap();
    read_frame(&mut stream).unwrap();
    drop(stream);
    log_after(&server, "disconnected", &["->", "<-"])
}

fn sample_utf8_fail_fast() -> String {
    let server = ServerProcess::start_traced(&["--echo"]);
    let mut stream = raw_client(server.addr);
    stream
        .write_all(&masked(
            TEXT_START,
            KEY,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
        ))
        .unwrap();
    stream
        .write_all(&masked(CONT, KEY, b"\x90\x80\x80"))
        .unwrap();
    let close = read_frame(&mut stream).unwrap();
    drop(stream);
    let mut out = log_after(&server, "disconnected", &["->", "<-", "disconnected"]);
    out.push_str(&format!(
        "close frame received by the client: {}\n",
        hex_frame(
            &[
                &[close.first_byte, close.payload.len() as u8][..],
                &close.payload
            ]
            .concat()
        )
    ));
    out
}

fn sample_close_trace() -> String {
    let server = ServerProcess::start_traced(&["--echo"]);
    // A clean close, then a client that breaks the rules (an unmasked frame).
    let mut stream = raw_client(server.addr);
    stream
        .write_all(&masked(CLOSE, KEY, b"\x03\xe8done"))
        .unwrap();
    expect_close(&mut stream);
    drop(stream);
    assert!(server.wait_for_log("disconnected"));
    let mut bad = raw_client(server.addr);
    bad.write_all(&client_frame(TEXT, b"hi", false)).unwrap();
    expect_close(&mut bad);
    drop(bad);
    log_after(&server, "failed with 1002", &["->", "<-", "disconnected"])
}

fn sample_help() -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wschat"))
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

fn sample_room_log() -> String {
    let server = ServerProcess::start(&[]);
    let mut first = raw_client(server.addr);
    assert!(server.wait_for_log("connected (1 client)"));
    let second = raw_client(server.addr);
    assert!(server.wait_for_log("connected (2 clients)"));
    first
        .write_all(&masked(CLOSE, KEY, b"\x03\xe8bye"))
        .unwrap();
    expect_close(&mut first);
    drop(first);
    assert!(server.wait_for_log("disconnected"));
    drop(second);
    let needle = "dropped without a close frame";
    log_after(&server, needle, &["listening", "connected"])
}

fn sample_refusals() -> String {
    let server = ServerProcess::start(&[
        "--handshake-timeout",
        "1",
        "--allow-origin",
        "http://127.0.0.1:8002",
        "--max-clients",
        "1",
        "--max-message",
        "1000",
        "--ping-interval",
        "1",
        "--write-timeout",
        "1",
    ]);
    let origin = "Origin: http://127.0.0.1:8002\r\n";
    // With --max-clients 1, the next client fits only once the last one's
    // thread has ended: wait for the server to be back to its idle threads.
    let idle_threads = server.threads();
    // 408: half a request, then nothing.
    let mut slow = connect(server.addr);
    slow.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert!(server.wait_for_log("refused: 408"));
    drop(slow);
    // Its thread must end before the next connection fits (--max-clients 1).
    assert!(server.wait_for_threads(idle_threads));
    // 403: another site's page.
    let mut evil = connect(server.addr);
    http_exchange(
        &mut evil,
        upgrade_request("Origin: http://evil.example\r\n").as_bytes(),
    );
    assert!(server.wait_for_log("refused: 403"));
    drop(evil);
    // Let the refused connections' threads finish, so they do not count below.
    assert!(server.wait_for_threads(idle_threads));
    // 503: one client is the limit.
    let mut member = connect(server.addr);
    http_exchange(&mut member, upgrade_request(origin).as_bytes());
    let mut extra = connect(server.addr);
    http_exchange(&mut extra, upgrade_request(origin).as_bytes());
    assert!(server.wait_for_log("refused: 503"));
    drop(extra);
    // 1009: a message over --max-message, refused on its header.
    member
        .write_all(&masked(BINARY, KEY, &[0; 1001])[..8])
        .unwrap();
    expect_close(&mut member);
    drop(member);
    assert!(server.wait_for_log("failed with 1009"));
    // Its thread, too, must end before the next client fits.
    assert!(server.wait_for_threads(idle_threads));
    // 1008: no pong.
    let mut silent = connect(server.addr);
    http_exchange(&mut silent, upgrade_request(origin).as_bytes());
    expect_close(&mut silent);
    drop(silent);
    assert!(server.wait_for_log("no pong"));
    assert!(server.wait_for_threads(idle_threads));
    // Too slow: a client that never reads, sent its own echoes until its
    // writes block for the write timeout. It answers the keep-alive blind,
    // with pongs that carry the pings' payload, so that "no pong" does not
    // come first.
    let mut stuck = connect(server.addr);
    http_exchange(&mut stuck, upgrade_request(origin).as_bytes());
    // At most 12 MiB: less than the 16 MiB queue bound, so that it is the
    // write timeout that drops the client.
    let started = std::time::Instant::now();
    let mut sent = 0;
    'sending: while started.elapsed() < std::time::Duration::from_secs(20) {
        if server.log_lines().iter().any(|l| l.contains("too slow")) {
            break;
        }
        if stuck.write_all(&masked(0x8A, KEY, b"wschat")).is_err() {
            break;
        }
        if sent == 12 << 10 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        while sent < 12 << 10 {
            if stuck.write_all(&masked(TEXT, KEY, &[b'x'; 1000])).is_err() {
                break 'sending;
            }
            sent += 1;
            if sent % 100 == 0 {
                continue 'sending;
            }
        }
    }
    log_after(
        &server,
        "dropped by the server",
        &["refused", "disconnected"],
    )
}

fn sample_mistake_one_read() -> String {
    let server = ServerProcess::start(&[]);
    with_log(mistakes::one_read_as_one_frame(&server), &server, "", &[])
}

fn sample_mistake_length_byte() -> String {
    let server = ServerProcess::start(&["--echo"]);
    mistakes::length_in_one_byte(&server)
}

fn sample_mistake_no_close() -> String {
    let server = ServerProcess::start(&[]);
    let output = mistakes::loop_without_close(&server);
    with_log(output, &server, "closed by client", &["closed by client"])
}

fn sample_mistake_no_validation() -> String {
    let server = ServerProcess::start(&[]);
    let output = mistakes::unchecked_handshakes(&server);
    with_log(output, &server, "refused: 404", &["refused"])
}

fn sample_mistake_early_join() -> String {
    let server = ServerProcess::start(&[]);
    with_log(
        mistakes::joined_before_the_handshake(&server),
        &server,
        "",
        &[],
    )
}

fn sample_client_request() -> String {
    let request = wschat::client_handshake::client_request("127.0.0.1:8002", "/", SAMPLE_KEY, None);
    String::from_utf8(request)
        .unwrap()
        .replace("\r\n", "\\r\\n\n")
}

/// `wschat connect` with `RUST_LOG` set to `log`, `input` on its stdin
/// line by line, each after the previous one's answer; then stdin ends,
/// unless `input` is empty: then stdin stays open, and the server must end
/// the connection. Returns the exit status, stdout and stderr.
fn run_client(url: &str, log: &str, input: &[&str]) -> (i32, String, Vec<String>) {
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_wschat"));
    command.args(["connect", url]);
    // An empty `log` runs the client as a user would, without RUST_LOG.
    if log.is_empty() {
        command.env_remove("RUST_LOG");
    } else {
        command.env("RUST_LOG", log);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    for line in input {
        writeln!(stdin, "{line}").unwrap();
        std::io::BufRead::read_line(&mut stdout, &mut printed).unwrap();
    }
    let open_stdin = input.is_empty().then_some(stdin);
    stdout.read_to_string(&mut printed).unwrap();
    let output = child.wait_with_output().unwrap();
    drop(open_stdin);
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    (output.status.code().unwrap_or(-1), printed, stderr)
}

/// Random values made fixed: masking keys, the handshake's key and accept.
fn hide_random(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("key=") {
        out.push_str(&rest[..i + 4]);
        let hex_len = rest[i + 4..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        out.push_str(if hex_len == 8 { "????????" } else { "" });
        rest = &rest[i + 4 + if hex_len == 8 { 8 } else { 0 }..];
    }
    out.push_str(rest);
    for name in ["Sec-WebSocket-Key", "Sec-WebSocket-Accept"] {
        for (sep, end) in [(": ", "\\r"), ("\", \"", "\"")] {
            let start = format!("{name}{sep}");
            if let Some(i) = out.find(&start) {
                let from = i + start.len();
                if let Some(len) = out[from..].find(end) {
                    out.replace_range(from..from + len, "(random)");
                }
            }
        }
    }
    out
}

fn sample_client_both_ends() -> String {
    let server = ServerProcess::start_traced(&["--echo"]);
    let url = format!("ws://{}/", server.addr);
    let (status, printed, stderr) = run_client(&url, "trace", &["Hello"]);
    assert_eq!(status, 0, "{stderr:?}");
    assert!(server.wait_for_log("disconnected"));
    let client: Vec<String> = stderr.iter().map(|l| hide_random(l)).collect();
    let server_log: Vec<String> = server
        .log_lines()
        .iter()
        .filter(|l| !l.contains("listening"))
        .map(|l| hide_random(l))
        .collect();
    let mut lines =
        vec!["--- the client: RUST_LOG=trace wschat connect ws://127.0.0.1:8002/ ---".to_string()];
    lines.extend(client);
    lines.push(format!("(stdout: {:?})", printed));
    lines.push("--- the server: RUST_LOG=trace wschat --echo ---".to_string());
    lines.extend(server_log);
    normalize(&lines)
}

fn sample_client_refusals() -> String {
    type Answer = fn(&mut TcpStream, &str);
    let cases: [(&str, Answer); 9] = [
        ("200 OK instead of 101", |s, _| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
        }),
        ("no Upgrade header", |s, key| {
            let answer = switching(key, "").replace("Upgrade: websocket\r\n", "");
            s.write_all(answer.as_bytes()).unwrap()
        }),
        ("no Connection header", |s, key| {
            let answer = switching(key, "").replace("Connection: Upgrade\r\n", "");
            s.write_all(answer.as_bytes()).unwrap()
        }),
        ("the accept value of another key", |s, _| {
            s.write_all(switching(SAMPLE_KEY, "").as_bytes()).unwrap()
        }),
        ("an extension nobody asked for", |s, key| {
            let answer = switching(key, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
            s.write_all(answer.as_bytes()).unwrap()
        }),
        ("a subprotocol not offered", |s, key| {
            let answer = switching(key, "Sec-WebSocket-Protocol: superchat\r\n");
            s.write_all(answer.as_bytes()).unwrap()
        }),
        ("a masked frame after a good 101", |s, key| {
            s.write_all(switching(key, "").as_bytes()).unwrap();
            s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
                .unwrap();
        }),
        ("a close frame without a code, then TCP closed", |s, key| {
            s.write_all(switching(key, "").as_bytes()).unwrap();
            s.write_all(&[0x88, 0x00]).unwrap();
            let mut reply = [0u8; 6];
            s.read_exact(&mut reply).unwrap();
        }),
        ("TCP closed without a close frame", |s, key| {
            s.write_all(switching(key, "").as_bytes()).unwrap();
        }),
    ];
    let mut out = String::new();
    for (what, answer) in cases {
        let (addr, server) = raw_server(move |mut stream, key| {
            answer(&mut stream, &key);
            thread_sleep_ms(300);
        });
        let (status, _, stderr) = run_client(&format!("ws://{addr}/"), "", &[]);
        server.join().unwrap();
        out.push_str(&format!("the server sends {what}\n  exit {status}"));
        for line in stderr {
            out.push_str(&format!(": {line}"));
        }
        out.push('\n');
    }
    out
}

fn thread_sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// A sample's name and the function that produces it.
type Sample = (&'static str, fn() -> String);

/// Every sample the docs may embed, by name.
fn samples() -> Vec<Sample> {
    vec![
        ("accept-key", sample_accept_key),
        ("handshake", sample_handshake),
        ("handshake-log", sample_handshake_log),
        ("frames-hex", sample_frames_hex),
        ("mask-table", sample_mask_table),
        ("echo-trace", sample_echo_trace),
        ("fragments-trace", sample_fragments_trace),
        ("utf8-fail-fast", sample_utf8_fail_fast),
        ("close-trace", sample_close_trace),
        ("help", sample_help),
        ("room-log", sample_room_log),
        ("refusals", sample_refusals),
        ("mistake-one-read", sample_mistake_one_read),
        ("mistake-length-byte", sample_mistake_length_byte),
        ("mistake-no-close", sample_mistake_no_close),
        ("mistake-no-validation", sample_mistake_no_validation),
        ("mistake-early-join", sample_mistake_early_join),
        ("client-request", sample_client_request),
        ("client-both-ends", sample_client_both_ends),
        ("client-refusals", sample_client_refusals),
    ]
}

/// Replaces (when blessing) or checks the body of every sample block in `text`.
fn process(
    file: &Path,
    text: &str,
    bless: bool,
    made: &mut HashMap<&'static str, String>,
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut errors = Vec::new();
    let mut rest = text;
    let all = samples();
    while let Some(start) = rest.find("<!-- sample: ") {
        let open_end = rest[start..]
            .find("-->")
            .map(|i| start + i + 3)
            .expect("unclosed sample marker");
        let name = rest[start + 13..open_end - 3].trim().to_string();
        let close = rest[open_end..]
            .find("<!-- /sample -->")
            .map(|i| open_end + i)
            .expect("no <!-- /sample -->");
        out.push_str(&rest[..open_end]);
        let body = &rest[open_end..close];
        let Some((key, make)) = all.iter().find(|(n, _)| *n == name) else {
            errors.push(format!("{}: unknown sample {name:?}", file.display()));
            out.push_str(body);
            rest = &rest[close..];
            continue;
        };
        let generated = made.entry(key).or_insert_with(make).clone();
        let fresh = format!("\n```text\n{generated}```\n");
        if bless {
            out.push_str(&fresh);
        } else {
            out.push_str(body);
            if body != fresh {
                errors.push(format!(
                    "{}: sample {name} differs from what wschat produces now:\n--- docs ---{body}--- now ---{fresh}",
                    file.display()
                ));
            }
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    (out, errors)
}

#[test]
fn every_sample_in_the_docs_is_what_wschat_produces() {
    let bless = std::env::var_os("WSCHAT_BLESS").is_some();
    let mut made = HashMap::new();
    let mut errors = Vec::new();
    for file in doc_files() {
        let text = fs::read_to_string(&file).unwrap();
        let (new_text, file_errors) = process(&file, &text, bless, &mut made);
        if bless && new_text != text {
            fs::write(&file, new_text).unwrap();
        }
        errors.extend(file_errors);
    }
    assert!(
        errors.is_empty(),
        "{}\n(regenerate with WSCHAT_BLESS=1 cargo test --test docs)",
        errors.join("\n")
    );
}

/// `src/lib.rs` promises that the modules are listed in the order data flows
/// and that each uses only modules above it, so a reader never has to look
/// ahead. Checked here: every `crate::NAME` in a module names one listed
/// before it (comments may point ahead).
#[test]
fn each_module_uses_only_the_modules_before_it() {
    let lib = fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    assert!(order.len() > 10, "modules listed in src/lib.rs: {order:?}");
    let mut backwards = Vec::new();
    for (position, module) in order.iter().enumerate() {
        let source = fs::read_to_string(root().join(format!("src/{module}.rs"))).unwrap();
        // The tests at the bottom of a module may use anything, and a
        // comment may point ahead ("see chapter 7"): only code counts.
        let code: String = source
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("crate::") {
            let used: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            match order.iter().position(|m| *m == used) {
                Some(p) if p < position => {}
                Some(_) => backwards.push(format!("{module} uses {used}, listed after it")),
                None => backwards.push(format!("{module} uses {used}, not in src/lib.rs")),
            }
        }
    }
    assert!(backwards.is_empty(), "{}", backwards.join("\n"));
}
