//! The opening handshake from the client's side (RFC 6455 §4.1): the
//! request a client writes, and the checks it makes on the answer.
//!
//! [`handshake`](crate::handshake) is the server reading a request; this is
//! the mirror image, and as sans-I/O: [`client_request`] returns the bytes
//! to send, [`parse_response`] is fed the bytes received so far and says
//! "need more" or "here is the response, and it used this many bytes" (what
//! follows is already the server's first frame), and [`check_response`]
//! holds the answer to §4.1's six rules, each failure naming the rule.

use crate::handshake::{
    MAX_REQUEST_BYTES, Parse, SUBPROTOCOL, WEBSOCKET_VERSION, accept_key, has_bare_line_feed,
    has_token, header_values, parse_header_line,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;

/// The longest response head read before giving up: the same limit the
/// server puts on requests. A server is trusted no more than a client.
pub const MAX_RESPONSE_BYTES: usize = MAX_REQUEST_BYTES;

/// A parsed HTTP response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, such as 101.
    pub status: u16,
    /// The reason phrase, such as `Switching Protocols`.
    pub reason: String,
    /// The header fields in the order received.
    pub headers: Vec<(String, String)>,
}

/// Why the client gives up on the handshake (§4.1: "the client MUST _Fail
/// the WebSocket Connection_"). Each says which rule the answer broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No blank line within [`MAX_RESPONSE_BYTES`].
    TooLarge,
    /// Not an HTTP/1.1 response head: the line, cut short.
    Malformed(String),
    /// The server closed the connection before its answer ended.
    ClosedEarly,
    /// No complete answer within this many seconds.
    TimedOut(u64),
    /// Check 1: the status is not 101.
    NotSwitching(u16, String),
    /// Check 2: no `Upgrade: websocket`.
    NoUpgrade,
    /// Check 3: no `Connection: Upgrade`.
    NoConnectionUpgrade,
    /// Check 4: `Sec-WebSocket-Accept` missing or not the one our key gives.
    WrongAccept {
        /// What §4.2.2 makes of our key.
        expected: String,
        /// What the server sent, if anything.
        received: Option<String>,
    },
    /// Check 5: an extension, though we asked for none.
    Extension(String),
    /// Check 6: a subprotocol we did not offer.
    Subprotocol(String),
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandshakeFailure::*;
        match self {
            TooLarge => write!(
                f,
                "the response head is over {MAX_RESPONSE_BYTES} bytes without its end"
            ),
            Malformed(line) => write!(f, "not an HTTP/1.1 response: {line:?}"),
            ClosedEarly => write!(
                f,
                "the server closed the connection before its answer ended"
            ),
            TimedOut(secs) => write!(f, "no complete answer within {secs} s"),
            NotSwitching(status, reason) => write!(
                f,
                "the server answered {status} {reason}, not 101 Switching Protocols \
                 (RFC 6455 §4.1, check 1)"
            ),
            NoUpgrade => write!(
                f,
                "the response lacks `Upgrade: websocket` (RFC 6455 §4.1, check 2)"
            ),
            NoConnectionUpgrade => write!(
                f,
                "the response lacks `Connection: Upgrade` (RFC 6455 §4.1, check 3)"
            ),
            // The expected value is left out: it changes with every key.
            WrongAccept { received, .. } => write!(
                f,
                "Sec-WebSocket-Accept is {}, not the base64 SHA-1 of our key and the GUID \
                 (RFC 6455 §4.1, check 4)",
                match received {
                    Some(value) => format!("{value:?}"),
                    None => "missing".to_string(),
                }
            ),
            Extension(value) => write!(
                f,
                "the server chose the extension {value:?}, which we did not ask for \
                 (RFC 6455 §4.1, check 5)"
            ),
            Subprotocol(value) => write!(
                f,
                "the server chose the subprotocol {value:?}, which we did not offer \
                 (RFC 6455 §4.1, check 6)"
            ),
        }
    }
}

impl std::error::Error for HandshakeFailure {}

/// `Sec-WebSocket-Key` from 16 random bytes (§4.1: "a nonce consisting of
/// a randomly selected 16-byte value that has been base64-encoded").
pub fn key_from_nonce(nonce: &[u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// The opening request (§4.1, the numbered requirements 2 to 12).
///
/// `host` is the `Host` value (the port included unless it is 80),
/// `resource` the path and query, `/` at least.
pub fn client_request(host: &str, resource: &str, key: &str, origin: Option<&str>) -> Vec<u8> {
    let mut request = format!(
        "GET {resource} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: {WEBSOCKET_VERSION}\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
    );
    // §4.1 item 8: a browser always sends Origin; other clients may.
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Finds the end of the response head in `buf` and parses it: the same
/// "need more" contract as [`crate::handshake::parse_request`].
pub fn parse_response(buf: &[u8]) -> Result<Parse<Response>, HandshakeFailure> {
    let window = &buf[..buf.len().min(MAX_RESPONSE_BYTES)];
    let end = window.windows(4).position(|w| w == b"\r\n\r\n");
    let head_so_far = &window[..end.map_or(window.len(), |end| end + 4)];
    if has_bare_line_feed(head_so_far) {
        return Err(HandshakeFailure::Malformed(
            "a line ends in a bare LF".into(),
        ));
    }
    let Some(end) = end else {
        return if buf.len() >= MAX_RESPONSE_BYTES {
            Err(HandshakeFailure::TooLarge)
        } else {
            Ok(Parse::Partial)
        };
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| HandshakeFailure::Malformed("the head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let (status, reason) = parse_status_line(lines.next().unwrap_or(""))?;
    let headers = lines
        .map(|line| {
            parse_header_line(line)
                .map_err(|_| HandshakeFailure::Malformed(line.chars().take(80).collect()))
        })
        .collect::<Result<_, _>>()?;
    let response = Response {
        status,
        reason,
        headers,
    };
    Ok(Parse::Complete(response, end + 4))
}

/// `HTTP/1.1 101 Switching Protocols` into its code and reason (RFC 9112
/// §4). A 101 only exists in HTTP/1.1.
fn parse_status_line(line: &str) -> Result<(u16, String), HandshakeFailure> {
    let malformed = || HandshakeFailure::Malformed(line.chars().take(80).collect());
    let mut parts = line.splitn(3, ' ');
    let (Some("HTTP/1.1"), Some(code), reason) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let status = code.parse().map_err(|_| malformed())?;
    Ok((status, reason.unwrap_or("").to_string()))
}

impl Response {
    /// Every value of the header `name`, matched without regard to case.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        header_values(&self.headers, name)
    }

    /// Whether a comma-separated header `name` has `token`, in any case.
    fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }
}

/// §4.1's checks on the server's answer to the request made with `key`.
/// Returns the subprotocol the server chose, if any (it can only be the
/// one we offered).
pub fn check_response(response: &Response, key: &str) -> Result<Option<String>, HandshakeFailure> {
    // 1. "If the status code received from the server is not 101, ..."
    if response.status != 101 {
        return Err(HandshakeFailure::NotSwitching(
            response.status,
            response.reason.clone(),
        ));
    }
    // 2. Upgrade: an ASCII case-insensitive match for "websocket".
    if !response.has_token("Upgrade", "websocket") {
        return Err(HandshakeFailure::NoUpgrade);
    }
    // 3. Connection: a case-insensitive match for the token "Upgrade".
    if !response.has_token("Connection", "Upgrade") {
        return Err(HandshakeFailure::NoConnectionUpgrade);
    }
    // 4. Sec-WebSocket-Accept: base64(SHA-1(key + GUID)), exactly. This is
    // what proves the answer comes from a WebSocket server that read our
    // request, not from a cache or a server that blindly says yes.
    let expected = accept_key(key);
    let mut accepts = response.header_values("Sec-WebSocket-Accept");
    let received = accepts.next();
    if received != Some(expected.as_str()) || accepts.next().is_some() {
        return Err(HandshakeFailure::WrongAccept {
            received: received.map(str::to_string),
            expected,
        });
    }
    // 5. Extensions: we asked for none, so any is one we did not ask for.
    if let Some(extension) = response.header_values("Sec-WebSocket-Extensions").next() {
        return Err(HandshakeFailure::Extension(extension.to_string()));
    }
    // 6. Subprotocol: one we offered, or none. Compared exactly (§4.1).
    let mut protocols = response.header_values("Sec-WebSocket-Protocol");
    match (protocols.next(), protocols.next()) {
        (None, _) => Ok(None),
        (Some(SUBPROTOCOL), None) => Ok(Some(SUBPROTOCOL.to_string())),
        (Some(chosen), _) => Err(HandshakeFailure::Subprotocol(chosen.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's sample key and its accept value.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const GOOD: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

    fn response(head: &str) -> Response {
        match parse_response(format!("{head}\r\n").as_bytes()) {
            Ok(Parse::Complete(response, _)) => response,
            other => panic!("{other:?}"),
        }
    }

    fn check(head: &str) -> Result<Option<String>, HandshakeFailure> {
        check_response(&response(head), KEY)
    }

    #[test]
    fn the_request_has_every_header_of_section_4_1() {
        let request = client_request("example.com:9000", "/chat?x=1", KEY, Some("http://a.b"));
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\nHost: example.com:9000\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\
             Origin: http://a.b\r\n\r\n"
        );
    }

    #[test]
    fn a_key_is_16_bytes_in_base64() {
        assert_eq!(key_from_nonce(b"the sample nonce"), KEY);
    }

    #[test]
    fn a_good_answer_passes_and_the_frames_after_it_are_kept() {
        let mut bytes = format!("{GOOD}Sec-WebSocket-Protocol: chat\r\n\r\n").into_bytes();
        bytes.extend_from_slice(b"\x81\x02hi");
        let Ok(Parse::Complete(response, used)) = parse_response(&bytes) else {
            panic!()
        };
        assert_eq!(&bytes[used..], b"\x81\x02hi");
        assert_eq!(check_response(&response, KEY), Ok(Some("chat".into())));
        assert_eq!(check(GOOD), Ok(None));
    }

    #[test]
    fn partial_until_the_blank_line_then_a_limit() {
        assert_eq!(parse_response(b"HTTP/1.1 101 Swi"), Ok(Parse::Partial));
        let endless = format!("HTTP/1.1 101 OK\r\nX: {}", "y".repeat(MAX_RESPONSE_BYTES));
        assert_eq!(
            parse_response(endless.as_bytes()),
            Err(HandshakeFailure::TooLarge)
        );
    }

    #[test]
    fn each_broken_rule_is_named() {
        let cases = [
            ("HTTP/1.1 200 OK\r\n", "check 1"),
            (
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
                "check 2",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
                "check 3",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: x3JJHMbDL1EzLkh9GBhXDw==\r\n",
                "check 4",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
                "check 4",
            ),
            (
                &format!("{GOOD}Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                "check 5",
            ),
            (
                &format!("{GOOD}Sec-WebSocket-Protocol: superchat\r\n"),
                "check 6",
            ),
            (
                &format!("{GOOD}Sec-WebSocket-Protocol: Chat\r\n"),
                "check 6",
            ),
        ];
        for (head, rule) in cases {
            let error = check(head).expect_err(head);
            assert!(error.to_string().contains(rule), "{head}: {error}");
        }
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
                    connection: keep-alive, upgrade\r\n\
                    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        assert_eq!(check(head), Ok(None));
    }

    #[test]
    fn a_malformed_status_line_or_header_is_refused() {
        for head in [
            "HTTP/1.0 101 Switching Protocols\r\n",
            "HTTP/1.1 1010 Huh\r\n",
            "ICY 200 OK\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(format!("{head}\r\n").as_bytes()),
                    Err(HandshakeFailure::Malformed(_))
                ),
                "{head}"
            );
        }
        assert!(matches!(
            parse_response(b"HTTP/1.1 101 OK\nUpgrade: websocket\r\n\r\n"),
            Err(HandshakeFailure::Malformed(_))
        ));
    }
}
