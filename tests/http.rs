//! The same port speaks plain HTTP: the page at `/`, 404 and 405 elsewhere.

mod common;

use common::*;

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
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        let (head, _) = get(
            &server,
            &format!("{method} / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),
        );
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{method}: {head}"
        );
        assert!(head.contains("Allow: GET"));
    }
}

#[test]
fn the_page_is_served_again_and_again() {
    let server = ServerProcess::start(&[]);
    for _ in 0..20 {
        let (head, _) = get(&server, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
