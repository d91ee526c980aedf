//! `wschat connect`: the client's half of the protocol, over a blocking
//! socket.
//!
//! Everything the protocol asks of a client is already written: the request
//! and §4.1's checks on the answer ([`crate::client_handshake`]), masking
//! with a fresh key per frame ([`crate::random`], and [`Session`] in its
//! client role), the refusal of masked server frames, and the rest of the
//! frame and message rules, by the very code the server uses. What is left
//! is moving bytes, and one question a server never has: a terminal chat
//! waits for two things at once, the socket and the keyboard.
//!
//! The simplest correct answer is two threads. The calling thread reads the
//! socket, feeds the session and prints what arrives; a second thread reads
//! lines from stdin and sends them. They share one `Link`, the session
//! and the socket's writing side, behind one lock, and whoever changes the
//! session sends what that change queued before letting go: so frames go
//! out whole and in the order the session made them. With one peer there is
//! nobody else to keep waiting, so a write may block (up to
//! [`WRITE_TIMEOUT`] in all) while holding the lock.

use crate::client_handshake::{
    HandshakeFailure, check_response, client_request, key_from_nonce, parse_response,
};
use crate::config::ClientConfig;
use crate::connection::{wire_pieces, write_all_within};
use crate::frame::Role;
use crate::handshake::Parse;
use crate::message::Message;
use crate::random;
use crate::session::{CLOSE_TIMEOUT, Ending, Session, Settings, State};
use std::fmt;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for the TCP connection, and then for the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one write may block before the server counts as gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message accepted from the server, as the server's default.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The reader looks at the clock at least this often: the stdin thread may
/// have started the closing handshake while the reader was waiting in
/// `read`, and the close's deadline must not wait for the server's next
/// byte.
const CLOCK_CHECK: Duration = Duration::from_millis(250);

/// Why `wschat connect` ends with status 1.
#[derive(Debug)]
pub enum ClientError {
    /// No TCP connection.
    Connect(String),
    /// The server's answer broke a rule of §4.1.
    Handshake(HandshakeFailure),
    /// The connection ended without a closing handshake, or with a failure.
    Failed(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(why) => write!(f, "cannot connect: {why}"),
            ClientError::Handshake(failure) => write!(f, "handshake failed: {failure}"),
            ClientError::Failed(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The session and the socket's writing side: what both threads change.
struct Link {
    session: Session,
    socket: TcpStream,
}

impl Link {
    /// Sends everything the session has queued, in order. A write that
    /// fails or blocks past [`WRITE_TIMEOUT`] gives the server up.
    fn send_queued(&mut self) {
        let frames = self.session.take_outgoing();
        if frames.is_empty() {
            return;
        }
        let mut pieces = wire_pieces(&frames);
        if let Err(e) = write_all_within(&self.socket, &mut pieces, WRITE_TIMEOUT) {
            self.session.give_up(write_failure(e));
        }
    }
}

/// Why a write to the server failed, for the one line on stderr.
fn write_failure(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut => format!(
            "the server has not read what we sent for {} s",
            WRITE_TIMEOUT.as_secs()
        ),
        _ => format!("cannot send to the server: {e}"),
    }
}

fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    // A panic in the other thread is a bug; the session is still usable.
    link.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Connects, chats (or echoes) until the closing handshake, and says how it
/// ended: `Ok` after a closing handshake, whichever side began it.
pub fn run(config: &ClientConfig) -> Result<(), ClientError> {
    let (mut socket, leftover) = open(config)?;
    let name = match socket.local_addr() {
        // The server names us after our port: so do we, so that both ends'
        // trace lines for one frame read the same.
        Ok(addr) => format!("ID{}", addr.port()),
        Err(_) => "server".to_string(),
    };
    let settings = Settings {
        max_message: MAX_MESSAGE,
        max_queued: 16 * MAX_MESSAGE,
        ping_interval: None,
        mask_key: Some(random::mask_key),
        budget: None,
    };
    let writer = socket
        .try_clone()
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let link = Arc::new(Mutex::new(Link {
        session: Session::new(Role::Client, &name, settings, Instant::now()),
        socket: writer,
    }));
    if !config.echo {
        let typing = Arc::clone(&link);
        thread::Builder::new()
            .name("stdin".into())
            .spawn(move || send_lines(&typing))
            .map_err(|e| ClientError::Failed(format!("cannot start the stdin thread: {e}")))?;
    }
    let tcp_closed = receive(&mut socket, &link, leftover, config.echo);
    finish(&mut socket, &link, tcp_closed)
}

/// The TCP connection and the opening handshake; returns the socket and
/// whatever the server sent after its `101` (the start of its first frame).
///
/// One deadline, [`CONNECT_TIMEOUT`], for the connection and the whole
/// answer: a server that accepts late and then trickles its answer a byte
/// at a time does not get longer than that.
fn open(config: &ClientConfig) -> Result<(TcpStream, Vec<u8>), ClientError> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let connect_error = |e: io::Error| ClientError::Connect(format!("{}: {e}", config.url()));
    let addrs = (config.host.as_str(), config.port)
        .to_socket_addrs()
        .map_err(connect_error)?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut socket = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last_error = io::ErrorKind::TimedOut.into();
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                socket = Some(s);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let mut socket = socket.ok_or_else(|| connect_error(last_error))?;
    socket.set_nodelay(true).map_err(connect_error)?;

    // §4.1: "a randomly selected 16-byte value", from the OS.
    let mut nonce = [0u8; 16];
    random::fill(&mut nonce)
        .map_err(|e| ClientError::Failed(format!("cannot read {}: {e}", random::SOURCE)))?;
    let key = key_from_nonce(&nonce);
    let request = client_request(
        &config.host_header(),
        &config.resource,
        &key,
        config.origin.as_deref(),
    );
    log::debug!("request {:?}", String::from_utf8_lossy(&request));
    write_all_within(&socket, &mut [IoSlice::new(&request)], WRITE_TIMEOUT)
        .map_err(|e| ClientError::Failed(write_failure(e)))?;

    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match parse_response(&received).map_err(ClientError::Handshake)? {
            Parse::Complete(response, used) => {
                log::debug!(
                    "response {} {} {:?}",
                    response.status,
                    response.reason,
                    response.headers
                );
                let protocol = check_response(&response, &key).map_err(ClientError::Handshake)?;
                log::info!(
                    "connected to {} (subprotocol: {})",
                    config.url(),
                    protocol.as_deref().unwrap_or("none")
                );
                return Ok((socket, received[used..].to_vec()));
            }
            Parse::Partial => match read_before(&mut socket, &mut buf, deadline) {
                Ok(0) => return Err(ClientError::Handshake(HandshakeFailure::ClosedEarly)),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {
                    let secs = CONNECT_TIMEOUT.as_secs();
                    return Err(ClientError::Handshake(HandshakeFailure::TimedOut(secs)));
                }
                Err(e) => return Err(connect_error(e)),
            },
        }
    }
}

/// The reading thread's loop: bytes from the socket into the session, whole
/// messages out (printed, or sent back in echo mode), until the session is
/// closed. Returns whether the server closed TCP (or the socket failed).
fn receive(socket: &mut TcpStream, link: &Mutex<Link>, first: Vec<u8>, echo: bool) -> bool {
    let mut bytes = first;
    let mut buf = vec![0u8; 16 * 1024];
    let mut tcp_closed = false;
    loop {
        deliver(link, &bytes, echo);
        let deadline = {
            let mut link = lock(link);
            if tcp_closed {
                link.session.receive_eof();
            }
            link.session.tick(Instant::now());
            link.send_queued();
            if link.session.state() == State::Closed {
                return tcp_closed;
            }
            link.session.next_deadline()
        };
        let wait = deadline
            .map_or(CLOCK_CHECK, |d| d.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(1), CLOCK_CHECK);
        // A read timeout of zero would mean "none": hence at least 1 ms.
        bytes.clear();
        if socket.set_read_timeout(Some(wait)).is_err() {
            tcp_closed = true;
            continue;
        }
        match socket.read(&mut buf) {
            Ok(0) => tcp_closed = true,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                lock(link).session.peer_still_sending(Instant::now());
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => tcp_closed = true,
        }
    }
}

/// Feeds `bytes` to the session one message at a time, acting on each
/// before the next is read (§5.4's order: an echo goes back before the
/// answer to a later close).
fn deliver(link: &Mutex<Link>, bytes: &[u8], echo: bool) {
    let mut rest = bytes;
    loop {
        let (message, done) = {
            let mut link = lock(link);
            let (used, message) = link.session.receive_data(rest);
            rest = &rest[used..];
            let message = match message {
                Some(message) if echo => {
                    // Refused only once the connection is closing: nothing to do.
                    let _ = link.session.send_message(message);
                    None
                }
                other => other,
            };
            link.send_queued();
            let done = rest.is_empty() || link.session.state() == State::Closed;
            (message, done)
        };
        // Printed without the lock: a terminal slow to take it must not
        // stop the stdin thread from sending.
        if let Some(message) = message {
            show(&message);
        }
        if done {
            return;
        }
    }
}

/// One message on stdout, as one line: text with its control characters
/// escaped (a newline shows as `\n`, an escape as `\u{1b}`), so that a
/// message can neither pass for two lines, one of them someone else's, nor
/// drive the terminal; binary as its size.
fn show(message: &Message) {
    let line = match message {
        Message::Text(text) => one_line(text),
        Message::Binary(data) => format!("[binary {} bytes]", data.len()),
    };
    let mut stdout = io::stdout().lock();
    // A closed stdout (the reader of a pipe has gone) is not the server's
    // fault: the messages are dropped, the protocol goes on.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// `text` with every control character escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The stdin thread: each line is one text message; the end of stdin
/// starts the closing handshake (§7.1.2) with 1000.
fn send_lines(link: &Mutex<Link>) {
    let mut stdin = io::stdin().lock();
    loop {
        match read_line(&mut stdin, MAX_MESSAGE) {
            Line::Text(text) => {
                let mut link = lock(link);
                if link.session.send_message(Message::Text(text)).is_err() {
                    return; // closing or closed: no more data (§5.5.1)
                }
                link.send_queued();
            }
            Line::Skipped(why) => {
                // Not eprintln!, which panics if stderr is a closed pipe.
                let _ = writeln!(io::stderr(), "wschat: line not sent: {why}");
            }
            Line::End => {
                let mut link = lock(link);
                link.session
                    .close(crate::error::code::NORMAL, "", Instant::now());
                link.send_queued();
                return;
            }
        }
    }
}

/// A line of stdin, or why it was not sent.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(String),
    Skipped(String),
    End,
}

/// Reads one line, without its `\n` or `\r\n`, holding at most `max`
/// bytes of it (and its line end) in memory: a longer line is read to its
/// end and skipped.
fn read_line(input: &mut impl BufRead, max: usize) -> Line {
    let mut line = Vec::new();
    match input
        .by_ref()
        .take(max as u64 + 2)
        .read_until(b'\n', &mut line)
    {
        Ok(0) | Err(_) => return Line::End,
        Ok(_) => {}
    }
    let ended = line.last() == Some(&b'\n');
    if ended {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > max {
        // Throw the rest of the line away without keeping it.
        if !ended {
            skip_to_line_end(input);
        }
        return Line::Skipped(format!("longer than {max} bytes"));
    }
    match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::Skipped("not UTF-8 (a text message must be, §5.6)".into()),
    }
}

/// Reads and throws away up to the next `\n`, 64 KiB at a time.
fn skip_to_line_end(input: &mut impl BufRead) {
    let mut rest = Vec::new();
    loop {
        rest.clear();
        match input.by_ref().take(64 * 1024).read_until(b'\n', &mut rest) {
            Ok(n) if n > 0 && rest.last() != Some(&b'\n') => {}
            _ => return,
        }
    }
}

/// One read that ends by `deadline` at the latest (a timeout error after).
fn read_before(socket: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    socket.set_read_timeout(Some(left))?;
    socket.read(buf)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// After the session is closed: how it ended, and the TCP close.
///
/// §7.1.1: "the client SHOULD wait for the server to close the connection
/// but MAY close the connection at any time after sending and receiving a
/// Close message, e.g., if it has not received a TCP Close from the server
/// in a reasonable time period". So the server closes TCP first (and keeps
/// the TIME_WAIT), and the client waits for that, at most [`CLOSE_TIMEOUT`].
fn finish(socket: &mut TcpStream, link: &Mutex<Link>, tcp_closed: bool) -> Result<(), ClientError> {
    let (ending, handshake_done) = {
        let link = lock(link);
        let ending = link.session.ending().cloned().unwrap_or(Ending::Dropped);
        (ending, link.session.close_received())
    };
    let result = match &ending {
        Ending::ClosedByPeer(Some(frame)) => {
            log::info!(
                "closed by the server with {} {:?}",
                frame.code,
                frame.reason
            );
            Ok(())
        }
        Ending::ClosedByPeer(None) => {
            log::info!("closed by the server without a code (1005)");
            Ok(())
        }
        Ending::ClosedByUs(code, _) if handshake_done => {
            log::info!("closed with {code}; the server answered");
            Ok(())
        }
        Ending::ClosedByUs(..) if tcp_closed => Err(ClientError::Failed(
            "the server closed the connection without answering our close (1006, RFC 6455 §7.1.5)"
                .into(),
        )),
        Ending::ClosedByUs(..) => Err(ClientError::Failed(format!(
            "the server did not answer our close within {} s (RFC 6455 §7.1.2)",
            CLOSE_TIMEOUT.as_secs()
        ))),
        Ending::Failed(e) => Err(ClientError::Failed(format!(
            "the server broke a rule: {e}; sent close {} (RFC 6455 §7.1.7)",
            e.close_code()
        ))),
        Ending::Dropped => Err(ClientError::Failed(
            "the server closed the connection without a close frame (1006, RFC 6455 §7.1.5)".into(),
        )),
        Ending::PingTimeout => Err(ClientError::Failed("no pong".into())),
        Ending::GivenUp(why) => Err(ClientError::Failed(why.clone())),
    };
    if result.is_ok() && !tcp_closed {
        wait_for_tcp_close(socket);
    }
    result
}

/// Reads (and throws away) until the server closes TCP, or
/// [`CLOSE_TIMEOUT`] passes; either way the socket is closed when dropped.
fn wait_for_tcp_close(socket: &mut TcpStream) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match socket.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => break,
            Err(_) => return, // reset: closed all the same
        }
    }
    log::warn!(
        "the server did not close TCP within {} s of the closing handshake; closing it ourselves \
         (RFC 6455 §7.1.1)",
        CLOSE_TIMEOUT.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_always_one_line() {
        assert_eq!(
            one_line("hello\nID12345: I am someone else\r\x1b[2J\tκόσμε"),
            "hello\\nID12345: I am someone else\\r\\u{1b}[2J\\tκόσμε"
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_sent_with_either_line_end() {
        for input in [&b"0123456789\n"[..], b"0123456789\r\n", b"0123456789"] {
            let mut input = io::Cursor::new(input.to_vec());
            assert_eq!(read_line(&mut input, 10), Line::Text("0123456789".into()));
        }
    }

    #[test]
    fn lines_lose_their_ends_and_long_or_invalid_ones_are_skipped() {
        let mut input = io::Cursor::new(b"one\r\ntwo\n0123456789abc\n\xff\nlast".to_vec());
        assert_eq!(read_line(&mut input, 10), Line::Text("one".into()));
        assert_eq!(read_line(&mut input, 10), Line::Text("two".into()));
        assert!(matches!(read_line(&mut input, 10), Line::Skipped(_)));
        assert!(matches!(read_line(&mut input, 10), Line::Skipped(_)));
        assert_eq!(read_line(&mut input, 10), Line::Text("last".into()));
        assert_eq!(read_line(&mut input, 10), Line::End);
    }
}
