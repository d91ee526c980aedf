//! The opening handshake (RFC 6455 §4): an HTTP/1.1 request that asks to
//! upgrade, and the `101 Switching Protocols` answer.
//!
//! Nothing here touches a socket. [`parse_request`] is fed the bytes received
//! so far and says either "need more" ([`Parse::Partial`]) or "here is the
//! request, and it used this many bytes" ([`Parse::Complete`]), so whatever the
//! client sent after the request is kept for the first frame. [`validate`]
//! checks the request against §4.2.1, [`accept_key`] computes
//! `Sec-WebSocket-Accept`, and [`HandshakeResponse`] / [`error_response`] write
//! the bytes to send back.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;

/// The longest request head (request line, headers and the blank line) that is
/// read before answering 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// RFC 6455 §1.3: the GUID appended to the client's key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version RFC 6455 defines (§4.1, §11.6).
pub const WEBSOCKET_VERSION: &str = "13";

/// The subprotocol wschat speaks when a client offers it (§1.9, §4.2.2).
pub const SUBPROTOCOL: &str = "chat";

/// The result of feeding bytes to a parser: like `httparse::Status`, running
/// out of bytes is a normal outcome, not an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// The value, and how many bytes of the input it used.
    Complete(T, usize),
    /// The input ends before the value does: read more and call again.
    Partial,
}

/// A parsed HTTP request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, such as `GET` (case-sensitive, RFC 9112 §3.1).
    pub method: String,
    /// The path and query, such as `/` or `/chat?room=1`, also when the
    /// request named it in absolute form (`http://host:port/chat`).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The header fields in the order received, names as the client wrote them.
    pub headers: Vec<(String, String)>,
}

/// Why a request is refused, and so which HTTP status answers it: a bad
/// upgrade request, but also plain HTTP (404, 405) and the server's own
/// limits (408, 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 431: no blank line within [`MAX_REQUEST_BYTES`].
    HeadersTooLarge,
    /// 400: the request head is not UTF-8 text.
    NotUtf8,
    /// 400: the request line is not `METHOD TARGET HTTP/1.1`.
    BadRequestLine,
    /// 400: a line ends with a bare LF instead of CRLF (RFC 9112 §2.2).
    BareLineFeed,
    /// 400: the target is neither `/path` nor `http://host/path`, or holds
    /// a control character (RFC 9112 §3.2).
    BadTarget,
    /// 400: no `Host` header in an HTTP/1.1 request, more than one, or one
    /// that is not a host and port (RFC 9112 §3.2).
    BadHost(&'static str),
    /// 400: an upgrade request with a body: its bytes would be taken for
    /// WebSocket frames (RFC 9112 §6.3).
    BodyNotAllowed,
    /// 400: a `Content-Length` that is not one decimal number (RFC 9112 §6.3).
    BadContentLength,
    /// 400: an upgrade in HTTP/1.0 (RFC 6455 §4.2.1 item 1 asks for 1.1).
    UpgradeNeedsHttp11,
    /// 400: the version is not HTTP/1.1 (RFC 6455 §4.2.1 asks for 1.1 or higher).
    UnsupportedHttpVersion(String),
    /// 400: a header line has no colon or a malformed name.
    BadHeader(String),
    /// 405: the method is not GET (RFC 6455 §4.2.1 item 1).
    MethodNotAllowed(String),
    /// 404: plain HTTP for a path that does not exist.
    NotFound(String),
    /// 400: a required header is missing or does not hold what it must.
    MissingHeader(&'static str),
    /// 400: `Sec-WebSocket-Key` appears more than once (RFC 6455 §11.3.1).
    DuplicateKey,
    /// 400: `Sec-WebSocket-Key` is not the base64 of 16 bytes (§4.2.1 item 5).
    BadKey,
    /// 426: `Sec-WebSocket-Version` is not 13 (RFC 6455 §4.2.2, §4.4).
    UnsupportedVersion,
    /// 403: the `Origin` is not allowed (RFC 6455 §4.2.2 item 4, §10.2).
    ForbiddenOrigin(String),
    /// 503: the server is serving as many clients as it may.
    TooManyClients,
    /// 503: the server is stopping (SIGINT or SIGTERM).
    Stopping,
    /// 408: the request did not arrive within the handshake timeout.
    TimedOut,
}

impl Refusal {
    /// The status code and reason phrase that answer this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            Refusal::MethodNotAllowed(_) => (405, "Method Not Allowed"),
            Refusal::NotFound(_) => (404, "Not Found"),
            Refusal::UnsupportedVersion => (426, "Upgrade Required"),
            Refusal::ForbiddenOrigin(_) => (403, "Forbidden"),
            Refusal::TooManyClients | Refusal::Stopping => (503, "Service Unavailable"),
            Refusal::TimedOut => (408, "Request Timeout"),
            _ => (400, "Bad Request"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::HeadersTooLarge => {
                write!(f, "request headers are over {MAX_REQUEST_BYTES} bytes")
            }
            Refusal::NotUtf8 => write!(f, "request is not valid UTF-8 text"),
            Refusal::BadRequestLine => {
                write!(f, "request line is not 'METHOD /path HTTP/1.1'")
            }
            Refusal::BareLineFeed => write!(f, "lines must end with CRLF, not a bare LF"),
            Refusal::BadTarget => write!(
                f,
                "request target must be /path or http://host/path, without control characters"
            ),
            Refusal::BadHost(why) => write!(f, "{why}"),
            Refusal::BodyNotAllowed => write!(f, "an upgrade request cannot have a body"),
            Refusal::BadContentLength => write!(f, "Content-Length is not one number"),
            Refusal::UpgradeNeedsHttp11 => write!(f, "a WebSocket upgrade needs HTTP/1.1"),
            Refusal::UnsupportedHttpVersion(v) => {
                write!(
                    f,
                    "HTTP version {v:?} is not supported; use HTTP/1.1 or HTTP/1.0"
                )
            }
            Refusal::BadHeader(line) => write!(f, "malformed header line {line:?}"),
            Refusal::MethodNotAllowed(m) => {
                write!(f, "method {m:?} is not allowed; use GET or HEAD")
            }
            Refusal::NotFound(path) => write!(f, "no page at {path:?}"),
            Refusal::MissingHeader(what) => write!(f, "missing {what}"),
            Refusal::DuplicateKey => write!(f, "Sec-WebSocket-Key appears more than once"),
            Refusal::BadKey => {
                write!(
                    f,
                    "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
                )
            }
            Refusal::UnsupportedVersion => {
                write!(f, "Sec-WebSocket-Version must be {WEBSOCKET_VERSION}")
            }
            Refusal::ForbiddenOrigin(o) => write!(f, "origin {o:?} is not allowed"),
            Refusal::TooManyClients => write!(f, "too many clients; try again later"),
            Refusal::Stopping => write!(f, "the server is stopping"),
            Refusal::TimedOut => write!(f, "the request took too long to arrive"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Finds the end of the request head in `buf` and parses it.
///
/// Returns [`Parse::Partial`] while the blank line that ends the head has not
/// arrived, and [`Refusal::HeadersTooLarge`] once [`MAX_REQUEST_BYTES`]
/// have arrived without it. On success the count is the length of the head,
/// blank line included; any bytes after it belong to the WebSocket stream.
pub fn parse_request(buf: &[u8]) -> Result<Parse<Request>, Refusal> {
    let window = &buf[..buf.len().min(MAX_REQUEST_BYTES)];
    // RFC 9112 §2.1: the head ends with an empty line, CRLF CRLF.
    let end = window.windows(4).position(|w| w == b"\r\n\r\n");
    // RFC 9112 §2.2 lets a server accept a bare LF as a line end; wschat
    // answers at once instead of waiting for a CRLF that will never come.
    let head_so_far = &window[..end.map_or(window.len(), |end| end + 4)];
    if has_bare_line_feed(head_so_far) {
        return Err(Refusal::BareLineFeed);
    }
    let Some(end) = end else {
        return if buf.len() >= MAX_REQUEST_BYTES {
            Err(Refusal::HeadersTooLarge)
        } else {
            Ok(Parse::Partial)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Refusal::NotUtf8)?;
    let mut lines = head.split("\r\n");
    let (method, path, version) = parse_request_line(lines.next().unwrap_or(""))?;
    let headers = lines.map(parse_header_line).collect::<Result<_, _>>()?;
    let request = Request {
        method,
        path,
        version,
        headers,
    };
    Ok(Parse::Complete(request, end + 4))
}

/// Whether some `\n` in `bytes` has no `\r` before it.
pub fn has_bare_line_feed(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// `GET /chat HTTP/1.1` into its method, path and version (RFC 9112 §3).
fn parse_request_line(line: &str) -> Result<(String, String, String), Refusal> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequestLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(Refusal::BadRequestLine);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Refusal::UnsupportedHttpVersion(version.to_string()));
    }
    let path = request_path(target)?;
    Ok((method.to_string(), path, version.to_string()))
}

/// The path of a request target (RFC 9112 §3.2): origin form `/chat?x`
/// as it is, or absolute form `http://host:port/chat?x` without its scheme
/// and authority, as a proxy sends it (§3.2.2: a server "MUST accept" it).
fn request_path(target: &str) -> Result<String, Refusal> {
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err(Refusal::BadTarget);
    }
    if target.starts_with('/') {
        return Ok(target.to_string());
    }
    let scheme_end = target.find("://").ok_or(Refusal::BadTarget)?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(Refusal::BadTarget);
    }
    let rest = &target[scheme_end + 3..];
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_start == 0 {
        return Err(Refusal::BadTarget); // no authority
    }
    match &rest[path_start..] {
        "" => Ok("/".to_string()),
        path if path.starts_with('?') => Ok(format!("/{path}")),
        path => Ok(path.to_string()),
    }
}

/// `Name: value` into its two parts (RFC 7230 §3.2).
pub fn parse_header_line(line: &str) -> Result<(String, String), Refusal> {
    let bad = || Refusal::BadHeader(line.chars().take(80).collect());
    let (name, value) = line.split_once(':').ok_or_else(bad)?;
    // RFC 7230 §3.2.4: no whitespace between name and colon, and no
    // obs-fold (a line starting with whitespace continuing the previous one).
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(bad());
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

/// RFC 9110 §7.2: `Host = uri-host [ ":" port ]`, where a host is a name or
/// an IPv4 address (letters, digits and `-._~!$&'()*+,;=%`) or an IPv6
/// address in brackets. An empty value is allowed.
fn is_host_and_port(value: &str) -> bool {
    // `port` is empty, or `:` and the port.
    let (host_ok, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => (
                v6.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                port,
            ),
            None => return false,
        },
        None => {
            let host = value.rsplit_once(':').map_or(value, |(host, _)| host);
            let name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            (host.bytes().all(name), &value[host.len()..])
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// RFC 9110 §5.6.2: the characters a method or header name may contain.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Every value of the header `name` in `headers`, matched without regard
/// to case (RFC 9110 §5.1). A request's and a response's alike.
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a comma-separated header such as `Connection: keep-alive,
/// Upgrade` holds `token`, matched without regard to case.
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Request {
    /// Every value of the header `name`, matched without regard to case.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        header_values(&self.headers, name)
    }

    /// The first value of the header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header holds `token` ([`has_token`]).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }

    /// Whether the client asks to upgrade to WebSocket. Any other request,
    /// one that asks to upgrade to something else (`Upgrade: h2c`)
    /// included, is plain HTTP: a server may ignore an `Upgrade` it does not
    /// speak (RFC 9110 §7.8).
    pub fn wants_upgrade(&self) -> bool {
        self.has_token("Upgrade", "websocket")
    }

    /// RFC 9112 §6.3: "If a message is received without Transfer-Encoding
    /// and with an invalid Content-Length header field, then the message
    /// framing is invalid" and a server "MUST respond with a 400". Valid is
    /// one decimal number, in every `Content-Length` line alike.
    pub fn check_content_length(&self) -> Result<(), Refusal> {
        let mut lengths = self.header_values("Content-Length");
        let Some(first) = lengths.next() else {
            return Ok(());
        };
        let valid = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit());
        if !valid(first) || lengths.any(|other| other != first) {
            return Err(Refusal::BadContentLength);
        }
        Ok(())
    }

    /// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    /// code to any HTTP/1.1 request message that lacks a Host header field
    /// and to any request message that contains more than one Host header
    /// field line or a Host header field with an invalid field value."
    /// (An HTTP/1.0 request may omit it.)
    pub fn check_host(&self) -> Result<(), Refusal> {
        let mut hosts = self.header_values("Host");
        match (hosts.next(), hosts.next()) {
            (None, _) if self.version == "HTTP/1.0" => Ok(()),
            (None, _) => Err(Refusal::BadHost("an HTTP/1.1 request needs a Host header")),
            (Some(_), Some(_)) => Err(Refusal::BadHost("more than one Host header")),
            (Some(host), None) if is_host_and_port(host) => Ok(()),
            (Some(_), None) => Err(Refusal::BadHost("the Host header is not a host[:port]")),
        }
    }
}

/// What a valid opening handshake asked for: everything needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The `Sec-WebSocket-Accept` value proving the server read the key.
    pub accept: String,
    /// The subprotocol selected, if the client offered one wschat speaks.
    pub protocol: Option<&'static str>,
}

/// Checks an upgrade request against RFC 6455 §4.2.1 and works out the answer.
///
/// `allowed_origins` empty means any origin is accepted.
pub fn validate(
    request: &Request,
    allowed_origins: &[String],
) -> Result<HandshakeResponse, Refusal> {
    // §4.2.1 item 1: "An HTTP/1.1 or higher GET request". wschat speaks
    // exactly HTTP/1.1: there is no higher version of HTTP/1.
    if request.method != "GET" {
        return Err(Refusal::MethodNotAllowed(request.method.clone()));
    }
    if request.version != "HTTP/1.1" {
        return Err(Refusal::UpgradeNeedsHttp11);
    }
    // §4.2.1 item 2: "A |Host| header field", and RFC 9112 §3.2's rules.
    request.check_host()?;
    check_no_body(request)?;
    // §4.2.1 item 3: Upgrade "including the value websocket", case-insensitive.
    if !request.has_token("Upgrade", "websocket") {
        return Err(Refusal::MissingHeader("Upgrade: websocket"));
    }
    // §4.2.1 item 4: Connection "that includes the token Upgrade".
    if !request.has_token("Connection", "Upgrade") {
        return Err(Refusal::MissingHeader("Connection: Upgrade"));
    }
    let key = validate_key(request)?;
    // §4.2.1 item 6 and §4.4: anything but 13 gets 426 naming the version we speak.
    let mut versions = request.header_values("Sec-WebSocket-Version");
    if versions.next() != Some(WEBSOCKET_VERSION) || versions.next().is_some() {
        return Err(Refusal::UnsupportedVersion);
    }
    check_origin(request, allowed_origins)?;
    // §4.2.2 item 5: select one offered subprotocol, or none. Unlike header
    // names, subprotocol names are compared exactly: a client that offered
    // "Chat" would reject an answer of "chat". Extensions (§9) are declined
    // by leaving Sec-WebSocket-Extensions out.
    let offered = request
        .header_values("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    let protocol = offered.then_some(SUBPROTOCOL);
    Ok(HandshakeResponse {
        accept: accept_key(key),
        protocol,
    })
}

/// RFC 9112 §6.3: a request has a body if it says so with `Content-Length`
/// (other than 0) or `Transfer-Encoding`. After an upgrade request the
/// next bytes are WebSocket frames, so a body is refused: a proxy that
/// frames requests by these headers would disagree with wschat about where
/// the request ends.
fn check_no_body(request: &Request) -> Result<(), Refusal> {
    request.check_content_length()?;
    if request.header("Transfer-Encoding").is_some() {
        return Err(Refusal::BodyNotAllowed);
    }
    let has_body = request
        .header_values("Content-Length")
        .any(|length| length.bytes().any(|b| b != b'0'));
    if has_body {
        return Err(Refusal::BodyNotAllowed);
    }
    Ok(())
}

/// §4.2.1 item 5: exactly one `Sec-WebSocket-Key`, the base64 of 16 bytes.
fn validate_key(request: &Request) -> Result<&str, Refusal> {
    let mut keys = request.header_values("Sec-WebSocket-Key");
    let key = keys
        .next()
        .ok_or(Refusal::MissingHeader("Sec-WebSocket-Key header"))?;
    if keys.next().is_some() {
        return Err(Refusal::DuplicateKey);
    }
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(key),
        _ => Err(Refusal::BadKey),
    }
}

/// §4.2.2 item 4 and §10.2: browsers always send `Origin`, so a server can
/// refuse pages from sites it does not trust.
fn check_origin(request: &Request, allowed: &[String]) -> Result<(), Refusal> {
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = request.header("Origin").unwrap_or("");
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(Refusal::ForbiddenOrigin(origin.to_string()))
    }
}

/// RFC 6455 §4.2.2 item 5.4: base64(SHA-1(key + GUID)).
///
/// The key is used as the client sent it, without decoding it.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.digest().bytes())
}

impl HandshakeResponse {
    /// The `101 Switching Protocols` response (RFC 6455 §4.2.2 item 5).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            self.accept
        );
        if let Some(protocol) = self.protocol {
            response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        response.push_str("\r\n");
        response.into_bytes()
    }
}

/// A complete HTTP response with a body, for plain HTTP and refusals.
///
/// It always says `Connection: close`: wschat answers one plain request per
/// connection, which keeps the reading loop simple.
pub fn http_response(status: (u16, &str), content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let (code, phrase) = status;
    let mut response = format!(
        "HTTP/1.1 {code} {phrase}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         {extra}\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

/// The response that refuses a handshake: its status and a one-line
/// plain-text body saying what was wrong.
pub fn error_response(error: &Refusal) -> Vec<u8> {
    // §4.4: a 426 names the versions the server does speak.
    let extra = match error {
        Refusal::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
        Refusal::MethodNotAllowed(_) => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    let body = format!("{error}\n");
    http_response(
        error.status(),
        "text/plain; charset=utf-8",
        extra,
        body.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(text: &str) -> Request {
        match parse_request(text.as_bytes()) {
            Ok(Parse::Complete(request, used)) => {
                assert_eq!(used, text.len());
                request
            }
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn check(text: &str) -> Result<HandshakeResponse, Refusal> {
        validate(&parse(text), &[])
    }

    #[test]
    fn accept_key_of_rfc_sample_key() {
        // RFC 6455 §1.3 works this example through.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_sample_request_gets_101_with_chat_selected() {
        let response = check(SAMPLE).unwrap();
        assert_eq!(
            String::from_utf8(response.to_bytes()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn no_subprotocol_header_when_chat_not_offered() {
        let text = SAMPLE.replace("chat, superchat", "superchat");
        let response = check(&text).unwrap();
        assert_eq!(response.protocol, None);
        let bytes = String::from_utf8(response.to_bytes()).unwrap();
        assert!(!bytes.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn subprotocol_names_match_exactly() {
        let text = SAMPLE.replace("chat, superchat", "Chat, superchat");
        assert_eq!(check(&text).unwrap().protocol, None);
        let text = SAMPLE.replace("chat, superchat", "superchat,chat");
        assert_eq!(check(&text).unwrap().protocol, Some("chat"));
    }

    #[test]
    fn extensions_are_declined() {
        let text = SAMPLE.replace(
            "Origin:",
            "Sec-WebSocket-Extensions: permessage-deflate\r\nOrigin:",
        );
        let bytes = check(&text).unwrap().to_bytes();
        assert!(!String::from_utf8(bytes).unwrap().contains("Extensions"));
    }

    #[test]
    fn request_split_anywhere_is_partial_until_blank_line() {
        for cut in 0..SAMPLE.len() {
            assert_eq!(
                parse_request(&SAMPLE.as_bytes()[..cut]),
                Ok(Parse::Partial),
                "cut at {cut}"
            );
        }
        parse(SAMPLE);
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut bytes = SAMPLE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
        match parse_request(&bytes) {
            Ok(Parse::Complete(_, used)) => assert_eq!(&bytes[used..], &[0x81, 0x85, 1, 2, 3, 4]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headers_match_without_regard_to_case() {
        let text = SAMPLE
            .replace("Upgrade: websocket", "UPGRADE: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, upgrade")
            .replace("Sec-WebSocket-Key", "sec-websocket-key");
        assert!(check(&text).is_ok());
    }

    #[test]
    fn head_over_8_kib_is_431() {
        let mut bytes = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        bytes.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse_request(&bytes), Err(Refusal::HeadersTooLarge));
        assert_eq!(Refusal::HeadersTooLarge.status().0, 431);
        // One byte less might still end with a blank line: keep reading.
        assert_eq!(
            parse_request(&bytes[..MAX_REQUEST_BYTES - 1]),
            Ok(Parse::Partial)
        );
    }

    #[test]
    fn missing_key_is_400() {
        let text = SAMPLE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        let err = check(&text).unwrap_err();
        assert_eq!(err.status().0, 400);
    }

    #[test]
    fn key_of_wrong_length_is_400() {
        for key in [
            "",
            "c2hvcnQ=",
            "dGhlIHNhbXBsZSBub25jZQ",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            let text = SAMPLE.replace("dGhlIHNhbXBsZSBub25jZQ==", key);
            assert_eq!(check(&text), Err(Refusal::BadKey), "key {key:?}");
        }
    }

    #[test]
    fn duplicate_key_is_400() {
        let text = SAMPLE.replace(
            "Origin:",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:",
        );
        assert_eq!(check(&text), Err(Refusal::DuplicateKey));
    }

    #[test]
    fn version_other_than_13_is_426_naming_13() {
        let text = SAMPLE.replace("Version: 13", "Version: 8");
        let err = check(&text).unwrap_err();
        assert_eq!(err, Refusal::UnsupportedVersion);
        let response = String::from_utf8(error_response(&err)).unwrap();
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn missing_upgrade_or_connection_token_is_400() {
        let no_upgrade = SAMPLE.replace("Upgrade: websocket", "Upgrade: h2c");
        assert_eq!(check(&no_upgrade).unwrap_err().status().0, 400);
        let no_token = SAMPLE.replace("Connection: Upgrade", "Connection: keep-alive");
        assert_eq!(check(&no_token).unwrap_err().status().0, 400);
        let no_host = SAMPLE.replace("Host: server.example.com\r\n", "");
        assert_eq!(check(&no_host).unwrap_err().status().0, 400);
    }

    #[test]
    fn method_other_than_get_is_405() {
        let text = SAMPLE.replace("GET /chat", "POST /chat");
        assert_eq!(check(&text).unwrap_err().status().0, 405);
    }

    #[test]
    fn malformed_request_lines_are_400() {
        for line in [
            "GET /",
            "GET / HTTP/1.1 extra",
            "GET chat HTTP/1.1",
            " / HTTP/1.1",
        ] {
            let text = format!("{line}\r\nHost: x\r\n\r\n");
            let err = parse_request(text.as_bytes()).unwrap_err();
            assert_eq!(err.status().0, 400, "{line:?}");
        }
        let two = parse_request(b"GET / HTTP/2.0\r\n\r\n").unwrap_err();
        assert_eq!(two, Refusal::UnsupportedHttpVersion("HTTP/2.0".into()));
    }

    #[test]
    fn http_1_0_is_read_but_cannot_upgrade() {
        let request = parse("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(request.version, "HTTP/1.0");
        assert_eq!(request.check_host(), Ok(()));
        let upgrade = SAMPLE.replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(check(&upgrade), Err(Refusal::UpgradeNeedsHttp11));
    }

    #[test]
    fn absolute_form_targets_become_paths() {
        for (target, path) in [
            ("http://127.0.0.1:8002/", "/"),
            ("http://127.0.0.1:8002", "/"),
            ("HTTP://example.com/chat?room=1", "/chat?room=1"),
            ("http://example.com?x", "/?x"),
            ("https://[::1]:8443/", "/"),
        ] {
            let request = parse(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(request.path, path, "{target}");
        }
        for target in ["chat", "ftp://host/", "http:///nohost", "http://"] {
            let text = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let err = parse_request(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, Refusal::BadTarget | Refusal::BadRequestLine),
                "{target}: {err:?}"
            );
        }
    }

    #[test]
    fn control_characters_in_the_target_are_400() {
        for target in ["/a\u{0}b", "/a\u{7f}", "/\tx"] {
            let text = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(
                parse_request(text.as_bytes()),
                Err(Refusal::BadTarget),
                "{target:?}"
            );
        }
    }

    #[test]
    fn a_bare_line_feed_is_answered_at_once() {
        // Without the blank CRLF line the request would wait for ever.
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\nHost: x\n\n"),
            Err(Refusal::BareLineFeed)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\n"),
            Err(Refusal::BareLineFeed)
        );
        // Bytes after the head are frames, where any byte may appear.
        let mut bytes = SAMPLE.as_bytes().to_vec();
        bytes.extend(b"\n\n");
        assert!(matches!(parse_request(&bytes), Ok(Parse::Complete(..))));
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let with_hosts = |hosts: &str| parse(&format!("GET / HTTP/1.1\r\n{hosts}\r\n"));
        for good in [
            "Host: localhost\r\n",
            "Host: 127.0.0.1:8002\r\n",
            "Host: [::1]:80\r\n",
            "Host: \r\n",
        ] {
            assert_eq!(with_hosts(good).check_host(), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "Host: a\r\nHost: a\r\n",
            "Host: a b\r\n",
            "Host: a b c\r\n",
            "Host: a/b\r\n",
            "Host: host:port\r\n",
            "Host: [::1\r\n",
        ] {
            let err = with_hosts(bad).check_host().unwrap_err();
            assert_eq!(err.status().0, 400, "{bad:?}");
        }
    }

    #[test]
    fn an_upgrade_request_with_a_body_is_400() {
        for (header, expected) in [
            ("Content-Length: 0\r\n", None),
            ("Content-Length: 5\r\n", Some(Refusal::BodyNotAllowed)),
            ("Content-Length: abc\r\n", Some(Refusal::BadContentLength)),
            ("Content-Length: \r\n", Some(Refusal::BadContentLength)),
            (
                "Transfer-Encoding: chunked\r\n",
                Some(Refusal::BodyNotAllowed),
            ),
            ("Transfer-Encoding: gzip\r\n", Some(Refusal::BodyNotAllowed)),
        ] {
            let text = SAMPLE.replace("Origin:", &format!("{header}Origin:"));
            assert_eq!(check(&text).err(), expected, "{header:?}");
        }
    }

    #[test]
    fn only_upgrade_websocket_is_an_upgrade() {
        assert!(parse(SAMPLE).wants_upgrade());
        let h2c = SAMPLE.replace("Upgrade: websocket", "Upgrade: h2c");
        assert!(!parse(&h2c).wants_upgrade());
        let both = SAMPLE.replace("Upgrade: websocket", "Upgrade: h2c, WebSocket");
        assert!(parse(&both).wants_upgrade());
    }

    #[test]
    fn malformed_header_lines_are_400() {
        for header in [
            "NoColon",
            "Bad Name: x",
            ": empty",
            " folded: x",
            "X: a\u{1}b",
        ] {
            let text = format!("GET / HTTP/1.1\r\n{header}\r\n\r\n");
            let err = parse_request(text.as_bytes()).unwrap_err();
            assert!(matches!(err, Refusal::BadHeader(_)), "{header:?}");
        }
    }

    #[test]
    fn non_utf8_request_is_400() {
        let err = parse_request(b"GET /\xff HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(err, Refusal::NotUtf8);
    }

    #[test]
    fn origin_not_allowed_is_403() {
        let request = parse(SAMPLE);
        let allowed = vec!["http://example.com".to_string()];
        assert!(validate(&request, &allowed).is_ok());
        let other = vec!["https://wschat.example".to_string()];
        assert_eq!(validate(&request, &other).unwrap_err().status().0, 403);
    }

    #[test]
    fn error_response_has_plain_text_body_and_length() {
        let response = String::from_utf8(error_response(&Refusal::BadKey)).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("Sec-WebSocket-Key"));
    }
}
