//! The opening handshake over a real socket: the 101 answer, and every
//! refusal with its status and plain-text reason.

mod common;

use common::*;

fn respond(request: &str) -> (String, String) {
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = connect(server.addr);
    let answer = http_exchange(&mut stream, request.as_bytes());
    expect_tcp_closed_unless_101(&mut stream, &answer.0);
    answer
}

fn expect_tcp_closed_unless_101(stream: &mut std::net::TcpStream, head: &str) {
    if !head.starts_with("HTTP/1.1 101") {
        expect_tcp_closed(stream);
    }
}

#[test]
fn rfc_sample_key_gets_its_accept_value() {
    let (head, _) = respond(&upgrade_request(""));
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(head.contains("\r\nUpgrade: websocket\r\n"));
    assert!(head.contains("\r\nConnection: Upgrade\r\n"));
    assert!(!head.contains("Sec-WebSocket-Protocol"));
    assert!(!head.contains("Sec-WebSocket-Extensions"));
}

#[test]
fn extensions_are_declined() {
    let (head, _) = respond(&upgrade_request(
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    ));
    assert_eq!(status(&head), 101);
    assert!(!head.contains("Sec-WebSocket-Extensions"));
}

#[test]
fn connection_header_may_be_a_list() {
    let request =
        upgrade_request("").replace("Connection: Upgrade", "Connection: keep-alive, Upgrade");
    assert_eq!(status(&respond(&request).0), 101);
}

#[test]
fn missing_key_is_400_with_a_reason() {
    let request = upgrade_request("").replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), "");
    let (head, body) = respond(&request);
    assert_eq!(status(&head), 400);
    assert!(head.contains("Content-Type: text/plain"));
    assert!(body.contains("Sec-WebSocket-Key"), "{body}");
}

#[test]
fn key_not_16_bytes_is_400() {
    let request = upgrade_request("").replace(SAMPLE_KEY, "dG9vIHNob3J0");
    assert_eq!(status(&respond(&request).0), 400);
}

#[test]
fn version_not_13_is_426_with_the_version_header() {
    let request = upgrade_request("").replace("Version: 13", "Version: 8");
    let (head, _) = respond(&request);
    assert_eq!(status(&head), 426);
    assert!(head.contains("\r\nSec-WebSocket-Version: 13\r\n"));
}

#[test]
fn header_block_over_8_kib_is_431() {
    let filler = format!("X-Filler: {}\r\n", "a".repeat(9000));
    let (head, _) = respond(&upgrade_request(&filler));
    assert_eq!(status(&head), 431);
}

#[test]
fn other_method_is_405() {
    let request = upgrade_request("").replace("GET /", "POST /");
    assert_eq!(status(&respond(&request).0), 405);
}

#[test]
fn http_1_0_and_garbage_are_400() {
    let request = upgrade_request("").replace("HTTP/1.1", "HTTP/1.0");
    assert_eq!(status(&respond(&request).0), 400);
    assert_eq!(status(&respond("HELLO\r\n\r\n").0), 400);
    assert_eq!(
        status(&respond("GET / HTTP/1.1\r\nno colon here\r\n\r\n").0),
        400
    );
}

#[test]
fn request_split_across_many_reads_still_upgrades() {
    use std::io::Write;
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = connect(server.addr);
    for byte in upgrade_request("").bytes() {
        stream.write_all(&[byte]).unwrap();
    }
    let (head, _) = read_http_response(&mut stream);
    assert_eq!(status(&head), 101);
}

#[test]
fn a_refused_handshake_does_not_stop_the_server() {
    let server = ServerProcess::start(&["--echo"]);
    let mut bad = connect(server.addr);
    let (head, _) = http_exchange(
        &mut bad,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(status(&head), 400);
    assert!(server.wait_for_log("handshake refused: 400"));
    raw_client(server.addr);
}
