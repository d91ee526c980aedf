//! The thin blocking layer: where the sans-I/O pieces above meet a real
//! `TcpStream`.
//!
//! [`read_request`] reads the opening handshake; a [`Peer`] is the writing
//! half of an upgraded connection, which several threads may share; and
//! [`run`] is the reading loop that feeds bytes to a
//! [`Receiver`], answers pings, and carries out the
//! closing handshake. Everything it decides comes from the modules above;
//! this one only moves bytes and keeps time.

use crate::close::{CloseFrame, close_payload, reply_payload};
use crate::error::{ProtocolError, code};
use crate::frame::{FrameHeader, OpCode, encode_frame};
use crate::handshake::{HandshakeError, MAX_REQUEST_BYTES, Parse, Request, parse_request};
use crate::message::{Event, Message, Receiver, preview};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many bytes one `read` may bring in.
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// How long the server waits for the client's side of a closing handshake
/// before closing TCP anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why reading the opening request stopped short.
#[derive(Debug)]
pub enum RequestError {
    /// The request is wrong: answer it with an HTTP error status.
    Invalid(HandshakeError),
    /// The client did not finish its request within the handshake timeout.
    TimedOut,
    /// The client closed the connection before finishing its request.
    Closed,
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Invalid(e) => write!(f, "{} {}", e.status().0, e),
            RequestError::TimedOut => write!(f, "handshake timed out"),
            RequestError::Closed => write!(f, "closed before finishing its request"),
            RequestError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the opening request, however many reads it takes, and returns it
/// with whatever bytes arrived after it (the start of the first frame).
///
/// The whole request must arrive within `timeout`: a deadline, not a
/// per-read timeout, so a client sending one byte a second is cut off too.
pub fn read_request(
    mut stream: &TcpStream,
    timeout: Duration,
) -> Result<(Request, Vec<u8>), RequestError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(RequestError::Io)?;
        // Never read more than one byte past the limit: enough to know it was passed.
        let room = (MAX_REQUEST_BYTES + 1)
            .saturating_sub(buf.len())
            .min(chunk.len());
        let n = match stream.read(&mut chunk[..room.max(1)]) {
            Ok(0) => return Err(RequestError::Closed),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(RequestError::TimedOut),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RequestError::Io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        // Only a read that brought a line end can have completed the head.
        if !chunk[..n].contains(&b'\n') && buf.len() < MAX_REQUEST_BYTES {
            continue;
        }
        match parse_request(&buf).map_err(RequestError::Invalid)? {
            Parse::Complete(request, used) => return Ok((request, buf.split_off(used))),
            Parse::Partial => continue,
        }
    }
}

/// Whether a read or write failed because its timeout ran out.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes a complete HTTP response, then closes our side.
pub fn send_http(mut stream: &TcpStream, response: &[u8]) -> io::Result<()> {
    stream.write_all(response)?;
    stream.flush()?;
    linger_and_close(stream);
    Ok(())
}

/// Closes TCP the polite way: our side first, then read and discard what the
/// client still sends, for at most [`CLOSE_TIMEOUT`], until it closes too.
///
/// Closing a socket that still has unread bytes makes the kernel send a RST
/// instead of a FIN, and a RST can destroy the last frame or response we
/// sent before the client reads it. Draining first avoids that.
pub fn linger_and_close(mut stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut sink = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// The writing half of an upgraded connection.
///
/// Any thread may send through a `&Peer`: the client's own thread (pongs,
/// echoes, close frames) and every thread that broadcasts to it. Frames go
/// into an outbox, and one thread at a time, the *writer*, writes them to
/// the socket in order. A thread that finds another already writing leaves
/// its frame in the outbox and moves on, so only the writer ever waits on a
/// slow client, never the threads queuing behind it. Frames are written
/// whole by one writer, so they never interleave on the wire.
#[derive(Debug)]
pub struct Peer {
    /// The client's name, `ID` and its port, as in `ID54321`.
    pub id: String,
    stream: TcpStream,
    outbox: Mutex<Outbox>,
    /// Signalled whenever the writer stops, for [`Peer::close_tcp`].
    writer_done: Condvar,
    /// How many bytes may wait in the outbox before the client counts as too slow.
    max_queued: usize,
}

/// Frames waiting for the socket, and the state of the writing side.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Arc<[u8]>>,
    queued_bytes: usize,
    /// Some thread is writing to the socket right now.
    writing: bool,
    /// A close frame is queued or sent: §5.5.1 allows no data frame after it.
    close_queued: bool,
    /// Why the connection was given up on, if it was.
    broken: Option<String>,
}

impl Peer {
    /// Wraps an upgraded stream. Writes that block longer than
    /// `write_timeout` fail and drop the client, so a client that stops
    /// reading cannot stall whoever is writing to it; so does an outbox
    /// holding more than `max_queued` bytes.
    pub fn new(
        id: String,
        stream: TcpStream,
        write_timeout: Duration,
        max_queued: usize,
    ) -> io::Result<Peer> {
        stream.set_write_timeout(Some(write_timeout))?;
        Ok(Peer {
            id,
            stream,
            outbox: Mutex::new(Outbox::default()),
            writer_done: Condvar::new(),
            max_queued,
        })
    }

    /// The socket, for the reading loop.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic elsewhere cannot leave the outbox half-updated in a way
        // that matters here, so a poisoned lock is still used.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the server gave up on this client, if it did.
    pub fn broken(&self) -> Option<String> {
        self.outbox().broken.clone()
    }

    /// Queues one encoded frame and, unless another thread is already
    /// writing, writes the outbox out.
    pub fn send_frame(&self, frame: Arc<[u8]>) -> io::Result<()> {
        let mut outbox = self.outbox();
        if let Some(why) = &outbox.broken {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, why.clone()));
        }
        if outbox.close_queued {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "close frame already sent",
            ));
        }
        if outbox.queued_bytes + frame.len() > self.max_queued {
            let why = format!(
                "too slow: over {} bytes waiting to be sent",
                self.max_queued
            );
            return Err(self.give_up(outbox, why));
        }
        outbox.close_queued = is_close_frame(&frame);
        outbox.queued_bytes += frame.len();
        outbox.queue.push_back(frame);
        if outbox.writing {
            return Ok(());
        }
        outbox.writing = true;
        drop(outbox);
        self.write_outbox()
    }

    /// The writer's loop: write queued frames until the outbox is empty.
    fn write_outbox(&self) -> io::Result<()> {
        loop {
            let frame = {
                let mut outbox = self.outbox();
                let Some(frame) = outbox.queue.pop_front() else {
                    outbox.writing = false;
                    self.writer_done.notify_all();
                    return Ok(());
                };
                outbox.queued_bytes -= frame.len();
                frame
            };
            self.trace_outgoing(&frame);
            // A failed write may have sent part of a frame, after which the
            // stream can never be in sync again: give up on the client.
            if let Err(e) = (&self.stream).write_all(&frame) {
                let why = if is_timeout(&e) {
                    "too slow: a write blocked for the whole write timeout".to_string()
                } else {
                    format!("write failed: {e}")
                };
                return Err(self.give_up(self.outbox(), why));
            }
        }
    }

    /// Marks the connection broken and shuts the socket, which also ends
    /// the client's reading loop.
    fn give_up(&self, mut outbox: MutexGuard<'_, Outbox>, why: String) -> io::Error {
        outbox.queue.clear();
        outbox.queued_bytes = 0;
        outbox.writing = false;
        outbox.broken = Some(why.clone());
        self.writer_done.notify_all();
        drop(outbox);
        let _ = self.stream.shutdown(Shutdown::Both);
        io::Error::new(io::ErrorKind::BrokenPipe, why)
    }

    /// Encodes and sends one unfragmented frame.
    pub fn send(&self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::new();
        encode_frame(opcode, payload, &mut frame);
        self.send_frame(frame.into())
    }

    /// Sends a data message as a single frame.
    pub fn send_message(&self, message: &Message) -> io::Result<()> {
        match message {
            Message::Text(text) => self.send(OpCode::Text, text.as_bytes()),
            Message::Binary(data) => self.send(OpCode::Binary, data),
        }
    }

    /// Ends the connection once the outbox has been written (for at most
    /// [`CLOSE_TIMEOUT`]), with [`linger_and_close`].
    pub fn close_tcp(&self) {
        let outbox = self.outbox();
        let _ = self
            .writer_done
            .wait_timeout_while(outbox, CLOSE_TIMEOUT, |o| o.writing);
        linger_and_close(&self.stream);
    }

    /// One annotated line per sent frame, at `trace` level.
    fn trace_outgoing(&self, frame: &[u8]) {
        if log::log_enabled!(log::Level::Trace)
            && let Ok(Some((header, len))) = FrameHeader::parse(frame)
        {
            log::trace!("{} <- {header} payload={}", self.id, preview(&frame[len..]));
        }
    }
}

/// Whether an encoded frame is a close frame (opcode 0x8, §5.5.1).
fn is_close_frame(frame: &[u8]) -> bool {
    frame
        .first()
        .is_some_and(|b| b & 0x0F == OpCode::Close.as_u8())
}

/// How a connection ended: the reason logged when the client leaves.
#[derive(Debug)]
pub enum Ending {
    /// The client started the closing handshake, and the server answered.
    Closed(Option<CloseFrame>),
    /// The client broke the protocol; the server sent this close code.
    Failed(ProtocolError),
    /// The client did not answer a ping within the ping interval.
    PingTimeout,
    /// The connection ended without a closing handshake.
    Dropped,
    /// The server gave up on the client while writing to it.
    GivenUp(String),
    /// A read or write failed (a write timeout, a reset connection).
    Io(io::Error),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Closed(Some(frame)) => {
                write!(f, "closed by client with {} {:?}", frame.code, frame.reason)
            }
            Ending::Closed(None) => write!(f, "closed by client without a code"),
            Ending::Failed(e) => write!(f, "failed with {}: {e}", e.close_code()),
            Ending::PingTimeout => write!(f, "no pong within the ping interval"),
            Ending::Dropped => write!(f, "connection dropped without a close frame"),
            Ending::GivenUp(why) => write!(f, "dropped by the server: {why}"),
            Ending::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The reading loop of an upgraded connection.
///
/// `pending` holds bytes that arrived with the handshake. Each complete data
/// message goes to `on_message`; pings are answered here; a close frame or a
/// protocol error ends the loop after the closing handshake.
pub fn run(
    peer: &Peer,
    mut receiver: Receiver,
    pending: Vec<u8>,
    ping_interval: Option<Duration>,
    mut on_message: impl FnMut(Message) -> io::Result<()>,
) -> Ending {
    let mut ping_sent = false;
    if let Err(ending) = process(
        peer,
        &mut receiver,
        &pending,
        &mut ping_sent,
        &mut on_message,
    ) {
        return ending;
    }
    if let Err(e) = peer.stream().set_read_timeout(ping_interval) {
        return Ending::Io(e);
    }
    let mut buf = vec![0u8; READ_BUFFER_SIZE];
    loop {
        let read = peer.stream().read(&mut buf);
        // A writer that gave up on the client shut the socket: say why.
        if let Some(why) = peer.broken() {
            return Ending::GivenUp(why);
        }
        let n = match read {
            Ok(0) => return Ending::Dropped,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) && !ping_sent => {
                // Silent for a whole interval: ask whether the client is still there.
                ping_sent = true;
                if let Err(e) = peer.send(OpCode::Ping, b"wschat") {
                    return Ending::Io(e);
                }
                continue;
            }
            Err(e) if is_timeout(&e) => {
                let payload = close_payload(code::POLICY_VIOLATION, "no pong");
                let _ = peer.send(OpCode::Close, &payload);
                peer.close_tcp();
                return Ending::PingTimeout;
            }
            Err(e) => return Ending::Io(e),
        };
        if let Err(ending) = process(
            peer,
            &mut receiver,
            &buf[..n],
            &mut ping_sent,
            &mut on_message,
        ) {
            return ending;
        }
    }
}

/// Feeds `bytes` to the receiver and acts on every event they complete.
/// `Err` carries the ending when the connection is over.
fn process(
    peer: &Peer,
    receiver: &mut Receiver,
    mut bytes: &[u8],
    ping_sent: &mut bool,
    on_message: &mut impl FnMut(Message) -> io::Result<()>,
) -> Result<(), Ending> {
    while !bytes.is_empty() {
        let (used, event) = receiver.receive(bytes).map_err(|e| fail(peer, e))?;
        bytes = &bytes[used..];
        let outcome = match event {
            None => Ok(()),
            Some(Event::Message(message)) => on_message(message),
            // §5.5.2: the pong carries the ping's "Application data".
            Some(Event::Ping(payload)) => peer.send(OpCode::Pong, &payload),
            Some(Event::Pong(_)) => {
                *ping_sent = false;
                Ok(())
            }
            Some(Event::Close(frame)) => return Err(answer_close(peer, frame)),
        };
        outcome.map_err(Ending::Io)?;
    }
    Ok(())
}

/// §7.1.7 "_Fail the WebSocket Connection_": send a close frame with the
/// error's code and a short reason, then close TCP.
fn fail(peer: &Peer, error: ProtocolError) -> Ending {
    let payload = close_payload(error.close_code(), &error.to_string());
    let _ = peer.send(OpCode::Close, &payload);
    peer.close_tcp();
    Ending::Failed(error)
}

/// §5.5.1: answer a close frame with a close frame, then close TCP; §7.1.1:
/// the server closes the TCP connection first.
fn answer_close(peer: &Peer, frame: Option<CloseFrame>) -> Ending {
    let _ = peer.send(OpCode::Close, &reply_payload(&frame));
    peer.close_tcp();
    Ending::Closed(frame)
}
