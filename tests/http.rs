//! The same port speaks plain HTTP: the page at `/`, 404 and 405 elsewhere.

mod common;

use common::*;
use std::io::{Read, Write};

fn get(server: &ServerProcess, request: &str) -> (String, String) {
    let mut stream = connect(server.addr);
    let answer = http_exchange(&mut stream, request.as_bytes());
    expect_tcp_closed(&mut stream);
    answer
}

#[test]
fn root_returns_the_chat_page() {
    let server = ServerProcess::start(&[]);
    let (head, body) = get(&server, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"));
    assert_eq!(body, include_str!("../www/index.html"));
    for id in ["status", "message", "send", "close", "connect", "log"] {
        assert!(body.contains(&format!("id=\"{id}\"")), "page lacks #{id}");
    }
}

#[test]
fn root_with_a_query_string_is_the_page_too() {
    let server = ServerProcess::start(&[]);
    let (head, _) = get(&server, "GET /?room=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[test]
fn other_paths_are_404() {
    let server = ServerProcess::start(&[]);
    for path in ["/index.html", "/favicon.ico", "/chat"] {
        let (head, body) = get(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        );
        assert!(
            head.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{path}: {head}"
        );
        assert!(body.contains(path));
    }
}

#[test]
fn other_methods_are_405() {
    let server = ServerProcess::start(&[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let (head, _) = get(
            &server,
            &format!("{method} / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),
        );
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{method}: {head}"
        );
        assert!(head.contains("Allow: GET, HEAD\r\n"), "{head}");
    }
}

/// Sends `request` and reads the answer: its status, head and body (to the
/// end of the connection, except after a 101).
fn answer(server: &ServerProcess, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = connect(server.addr);
    stream.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut body = Vec::new();
    if status(&head) != 101 {
        let _ = stream.read_to_end(&mut body);
    }
    (status(&head), head, body)
}

/// The HTTP rules of the contract (RFC 9110, RFC 9112), one request each.
#[test]
fn http_rules_table() {
    let server = ServerProcess::start(&[]);
    let port = server.addr.port();
    let upgrade = |extra: &str| upgrade_request(extra);
    let cases: Vec<(&str, String, u16)> = vec![
        // RFC 9112 §6.3: an upgrade request with a body.
        (
            "upgrade with a body",
            upgrade("Content-Length: 5\r\n") + "hello",
            400,
        ),
        (
            "upgrade with Content-Length 0",
            upgrade("Content-Length: 0\r\n"),
            101,
        ),
        (
            "upgrade with a bad Content-Length",
            upgrade("Content-Length: abc\r\n"),
            400,
        ),
        (
            "upgrade chunked",
            upgrade("Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        ("upgrade gzip", upgrade("Transfer-Encoding: gzip\r\n"), 400),
        // RFC 9112 §3.2: exactly one valid Host.
        (
            "upgrade with two Hosts",
            upgrade("Host: localhost\r\n"),
            400,
        ),
        (
            "upgrade with Host a b c",
            upgrade("").replace("Host: localhost", "Host: a b c"),
            400,
        ),
        ("page without Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        (
            "page with two Hosts",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".into(),
            400,
        ),
        (
            "page with Host a b",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n".into(),
            400,
        ),
        (
            "HTTP/1.0 page without Host",
            "GET / HTTP/1.0\r\n\r\n".into(),
            200,
        ),
        // RFC 9112 §6.3: an invalid Content-Length is a 400 on any request.
        (
            "page with Content-Length abc",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n".into(),
            400,
        ),
        (
            "page with two Content-Lengths",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".into(),
            400,
        ),
        (
            "HTTP/1.0 upgrade",
            upgrade("").replace("HTTP/1.1", "HTTP/1.0"),
            400,
        ),
        // RFC 9112 §3.2.2: the absolute form, as a proxy sends it.
        (
            "absolute-form upgrade",
            upgrade("").replace("GET / ", &format!("GET http://127.0.0.1:{port}/ ")),
            101,
        ),
        (
            "absolute-form page",
            format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
            200,
        ),
        (
            "absolute-form 404",
            format!("GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
            404,
        ),
        // Control characters in the target.
        (
            "NUL in the target",
            upgrade("").replace("GET / ", "GET /a\u{0}b "),
            400,
        ),
        (
            "DEL in the target",
            upgrade("").replace("GET / ", "GET /\u{7f} "),
            400,
        ),
        // RFC 9110 §7.8: an Upgrade the server does not speak is ignored.
        (
            "curl --http2",
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
                .into(),
            200,
        ),
        (
            "curl -I",
            "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            200,
        ),
        (
            "HEAD of a missing page",
            "HEAD /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            404,
        ),
        (
            "POST",
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".into(),
            405,
        ),
        // RFC 9112 §2.2: bare LF line ends get a prompt 400, not a timeout.
        ("bare LF", "GET / HTTP/1.1\nHost: localhost\n\n".into(), 400),
    ];
    for (what, request, expected) in cases {
        let started = std::time::Instant::now();
        let (code, head, body) = answer(&server, request.as_bytes());
        assert_eq!(code, expected, "{what}: {head}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{what}: slow"
        );
        if code >= 400 && !request.starts_with("HEAD") {
            // Every refusal says what was wrong, in one line.
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.ends_with('\n') && text.lines().count() == 1,
                "{what}: {text:?}"
            );
        }
        if request.starts_with("HEAD") {
            assert!(body.is_empty(), "{what}: a HEAD answer has no body");
        }
    }
}

#[test]
fn head_gives_the_page_s_headers_without_the_page() {
    let server = ServerProcess::start(&[]);
    let (code, head, body) = answer(&server, b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(code, 200);
    let page = include_str!("../www/index.html");
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", page.len())),
        "{head}"
    );
    assert!(body.is_empty());
}

#[test]
fn the_page_is_served_again_and_again() {
    let server = ServerProcess::start(&[]);
    for _ in 0..20 {
        let (head, _) = get(&server, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
