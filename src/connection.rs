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
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use crate::handshake::{HandshakeError, MAX_REQUEST_BYTES, Parse, Request, parse_request};
use crate::message::{Event, Message, Receiver, preview};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most bytes one `read` may bring in.
///
/// A connection's read buffer starts at [`FIRST_READ_BUFFER_SIZE`] and
/// doubles whenever a read fills it, up to this size. Most clients of a chat
/// room are idle most of the time, and their threads wait in `read` with the
/// buffer allocated: zeroed memory that the allocator hands out from pages
/// it used before is resident at once, so a full-size buffer would cost
/// every idle client 16 KiB.
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// The size of a connection's read buffer until a read fills it.
pub const FIRST_READ_BUFFER_SIZE: usize = 1024;

/// At most this many queued frames go to the socket in one system call
/// (`writev` takes up to 1024 buffers; a frame is one or two).
const MAX_FRAMES_PER_WRITE: usize = 16;

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
    /// The client closed the connection before finishing its request,
    /// after sending this many bytes of it.
    Closed(usize),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Invalid(e) => write!(f, "{} {}", e.status().0, e),
            RequestError::TimedOut => write!(f, "handshake timed out"),
            RequestError::Closed(0) => write!(f, "closed without sending a request"),
            RequestError::Closed(_) => write!(f, "closed before finishing its request"),
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
            Ok(0) => return Err(RequestError::Closed(buf.len())),
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
    /// Signalled when the writer stops while [`Peer::close_tcp`] waits for it.
    writer_done: Condvar,
    /// How many bytes may wait in the outbox before the client counts as too slow.
    max_queued: usize,
    /// How long writing one batch of frames may take before the client is dropped.
    write_timeout: Duration,
}

/// Frames waiting for the socket, and the state of the writing side.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Some thread is writing to the socket right now.
    writing: bool,
    /// [`Peer::close_tcp`] is waiting for the writer to stop.
    close_waiting: bool,
    /// A close frame is queued or sent: §5.5.1 allows no data frame after it.
    close_queued: bool,
    /// Why the connection was given up on, if it was.
    broken: Option<String>,
}

/// One frame in the outbox.
#[derive(Debug)]
enum Queued {
    /// Whole encoded frames (usually one). A broadcast encodes its frames
    /// once and every client's outbox holds the same bytes.
    Shared(Arc<[u8]>),
    /// A frame for this client alone, its header and payload kept apart so
    /// that the payload is never copied just to put a header in front of
    /// it: an echoed message goes out from the very buffer it was received
    /// into, which matters for a 16 MiB message. [`write_frames`] still
    /// sends the two in one system call.
    Parts { header: Vec<u8>, payload: Vec<u8> },
}

impl Queued {
    /// A server frame (§5.2: FIN set, not masked) carrying `payload`.
    fn new(opcode: OpCode, payload: Vec<u8>) -> Queued {
        let mut header = Vec::with_capacity(MAX_HEADER_LEN);
        FrameHeader::server(opcode, payload.len()).encode(&mut header);
        Queued::Parts { header, payload }
    }

    /// A data message as one frame, its bytes as the payload, uncopied.
    fn message(message: Message) -> Queued {
        match message {
            Message::Text(text) => Queued::new(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => Queued::new(OpCode::Binary, data),
        }
    }

    /// The frame's bytes as two pieces, to be sent one after the other.
    fn pieces(&self) -> (&[u8], &[u8]) {
        match self {
            Queued::Shared(frame) => (frame, &[]),
            Queued::Parts { header, payload } => (header, payload),
        }
    }

    fn len(&self) -> usize {
        let (first, second) = self.pieces();
        first.len() + second.len()
    }
}

impl Outbox {
    /// Everything queued, leaving the queue empty, for the writer to write.
    fn take_all(&mut self) -> VecDeque<Queued> {
        self.queued_bytes = 0;
        std::mem::take(&mut self.queue)
    }
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
            write_timeout,
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
        self.enqueue([Queued::Shared(frame)])
    }

    /// Queues frames, in order, and unless another thread is already
    /// writing, writes the outbox out.
    fn enqueue(&self, frames: impl IntoIterator<Item = Queued>) -> io::Result<()> {
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
        for frame in frames {
            if outbox.queued_bytes + frame.len() > self.max_queued {
                let why = format!(
                    "too slow: over {} bytes waiting to be sent",
                    self.max_queued
                );
                return Err(self.give_up(outbox, why));
            }
            outbox.close_queued |= is_close_frame(frame.pieces().0);
            outbox.queued_bytes += frame.len();
            outbox.queue.push_back(frame);
        }
        if outbox.writing {
            return Ok(());
        }
        outbox.writing = true;
        let batch = outbox.take_all();
        drop(outbox);
        self.write_outbox(batch)
    }

    /// The writer's loop: write `batch`, then whatever was queued meanwhile,
    /// until the outbox is empty. Everything queued goes out together, in
    /// one system call ([`write_frames`]): frames that pile up while the
    /// writer is busy cost no more system calls than one.
    fn write_outbox(&self, mut batch: VecDeque<Queued>) -> io::Result<()> {
        loop {
            for frame in &batch {
                self.trace_outgoing(frame);
            }
            // A failed write may have sent part of a frame, after which the
            // stream can never be in sync again: give up on the client.
            if let Err(e) = write_frames(&self.stream, batch.make_contiguous(), self.write_timeout)
            {
                let why = if is_timeout(&e) {
                    "too slow: a write blocked for the whole write timeout".to_string()
                } else {
                    format!("write failed: {e}")
                };
                return Err(self.give_up(self.outbox(), why));
            }
            batch.clear();
            let mut outbox = self.outbox();
            if outbox.queue.is_empty() {
                // Hand the emptied queue back, so the next frame queued
                // needs no new allocation.
                outbox.queue = batch;
                outbox.writing = false;
                // `notify_all` is a system call even when nobody waits
                // (a futex wake, on Linux), and this runs after every
                // write: only wake `close_tcp` when it is waiting.
                if outbox.close_waiting {
                    self.writer_done.notify_all();
                }
                return Ok(());
            }
            std::mem::swap(&mut outbox.queue, &mut batch);
            outbox.queued_bytes = 0;
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
        self.enqueue([Queued::new(opcode, payload.to_vec())])
    }

    /// Sends data messages, each as a single frame, together: one system
    /// call for all of them when the outbox was empty. The messages are
    /// taken by value: their bytes become the frames' payloads uncopied.
    pub fn send_messages(&self, messages: Vec<Message>) -> io::Result<()> {
        self.enqueue(messages.into_iter().map(Queued::message))
    }

    /// Ends the connection once the outbox has been written (for at most
    /// [`CLOSE_TIMEOUT`]), with [`linger_and_close`].
    pub fn close_tcp(&self) {
        let mut outbox = self.outbox();
        outbox.close_waiting = true;
        let (mut outbox, _) = self
            .writer_done
            .wait_timeout_while(outbox, CLOSE_TIMEOUT, |o| o.writing)
            .unwrap_or_else(|e| e.into_inner());
        outbox.close_waiting = false;
        drop(outbox);
        linger_and_close(&self.stream);
    }

    /// One annotated line per sent frame, at `trace` level.
    fn trace_outgoing(&self, frame: &Queued) {
        if !log::log_enabled!(log::Level::Trace) {
            return;
        }
        // A shared buffer may hold several whole frames (a batch of
        // broadcasts); `Parts` holds a header whose payload is the second piece.
        let (mut bytes, second) = frame.pieces();
        while let Ok(Some((header, len))) = FrameHeader::parse(bytes) {
            let end = len
                .saturating_add(header.payload_len as usize)
                .min(bytes.len());
            let payload = if end > len { &bytes[len..end] } else { second };
            log::trace!("{} <- {header} payload={}", self.id, preview(payload));
            bytes = &bytes[end..];
        }
    }
}

/// Writes whole frames to the socket, all of them, in as few system calls
/// as the kernel allows, and within `timeout` for the lot.
///
/// A `write_all` per frame, or per header and per payload, would cost a
/// system call each and, with Nagle's algorithm off, often a TCP segment
/// each. `write_vectored` (`writev`) hands the kernel every piece of up to
/// [`MAX_FRAMES_PER_WRITE`] frames at once, gathered in an array on the
/// stack, so that writing allocates nothing.
///
/// The socket's write timeout bounds each system call, and a call that
/// makes any progress at all starts the clock again: a client reading a
/// trickle could keep the writer busy for ever. So once a write comes back
/// short, the timeout of the next one is cut to what is left of `timeout`
/// (and put back at the end).
fn write_frames(stream: &TcpStream, frames: &[Queued], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut shortened = false;
    let mut result = Ok(());
    for chunk in frames.chunks(MAX_FRAMES_PER_WRITE) {
        let mut storage = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
        let mut count = 0;
        for frame in chunk {
            let (first, second) = frame.pieces();
            for piece in [first, second].into_iter().filter(|p| !p.is_empty()) {
                storage[count] = IoSlice::new(piece);
                count += 1;
            }
        }
        result = write_pieces(stream, &mut storage[..count], deadline, &mut shortened);
        if result.is_err() {
            break;
        }
    }
    if shortened {
        let _ = stream.set_write_timeout(Some(timeout));
    }
    result
}

/// Writes `pieces`, going on from wherever a short write stopped, by `deadline`.
fn write_pieces(
    mut stream: &TcpStream,
    mut pieces: &mut [IoSlice<'_>],
    deadline: Instant,
    shortened: &mut bool,
) -> io::Result<()> {
    while !pieces.is_empty() {
        // A single piece (one broadcast frame, the usual case) needs no
        // vector, and a plain `write` costs the kernel a little less.
        let written = match pieces {
            [piece] => stream.write(piece),
            _ => stream.write_vectored(pieces),
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut pieces, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if !pieces.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            *shortened = true;
            stream.set_write_timeout(Some(left))?;
        }
    }
    Ok(())
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
/// `pending` holds bytes that arrived with the handshake. Complete data
/// messages go to `on_messages`, in order, all those that one read brought
/// in at once (usually one); pings are answered here; a close frame or a
/// protocol error ends the loop once our close frame is queued. The caller
/// then closes TCP with [`Peer::close_tcp`].
pub fn run(
    peer: &Peer,
    mut receiver: Receiver,
    pending: Vec<u8>,
    ping_interval: Option<Duration>,
    mut on_messages: impl FnMut(Vec<Message>) -> io::Result<()>,
) -> Ending {
    let mut ping_sent = false;
    if let Err(ending) = process(
        peer,
        &mut receiver,
        &pending,
        &mut ping_sent,
        &mut on_messages,
    ) {
        return ending;
    }
    if let Err(e) = peer.stream().set_read_timeout(ping_interval) {
        return Ending::Io(e);
    }
    let mut buf = vec![0u8; FIRST_READ_BUFFER_SIZE];
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
                return Ending::PingTimeout;
            }
            Err(e) => return Ending::Io(e),
        };
        if let Err(ending) = process(
            peer,
            &mut receiver,
            &buf[..n],
            &mut ping_sent,
            &mut on_messages,
        ) {
            return ending;
        }
        // A full buffer means more was probably waiting: read more at a time.
        if n == buf.len() && buf.len() < READ_BUFFER_SIZE {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Feeds `bytes` to the receiver and acts on every event they complete.
/// `Err` carries the ending when the connection is over.
///
/// Data messages are collected and handed on together, so that messages
/// that arrived in one read can leave in one write (see
/// [`crate::room::notify`] and [`Peer::send_messages`]): under load,
/// that is one system call per batch instead of one per message. A control
/// frame, a protocol error or the end of the bytes hands them on first, so
/// everything is still answered in the order it arrived.
fn process(
    peer: &Peer,
    receiver: &mut Receiver,
    mut bytes: &[u8],
    ping_sent: &mut bool,
    on_messages: &mut impl FnMut(Vec<Message>) -> io::Result<()>,
) -> Result<(), Ending> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let event = match receiver.receive(bytes) {
            Ok((used, event)) => {
                bytes = &bytes[used..];
                event
            }
            Err(error) => {
                deliver(&mut messages, on_messages)?;
                return Err(fail(peer, error));
            }
        };
        let Some(event) = event else { continue };
        if let Event::Message(message) = event {
            messages.push(message);
            continue;
        }
        deliver(&mut messages, on_messages)?;
        let outcome = match event {
            // §5.5.2: the pong carries the ping's "Application data".
            Event::Ping(payload) => peer.send(OpCode::Pong, &payload),
            Event::Pong(_) => {
                *ping_sent = false;
                Ok(())
            }
            Event::Close(frame) => return Err(answer_close(peer, frame)),
            Event::Message(_) => Ok(()), // collected above
        };
        outcome.map_err(Ending::Io)?;
    }
    deliver(&mut messages, on_messages)
}

/// Hands the collected messages on, if there are any.
fn deliver(
    messages: &mut Vec<Message>,
    on_messages: &mut impl FnMut(Vec<Message>) -> io::Result<()>,
) -> Result<(), Ending> {
    if messages.is_empty() {
        return Ok(());
    }
    on_messages(std::mem::take(messages)).map_err(Ending::Io)
}

/// §7.1.7 "_Fail the WebSocket Connection_": send a close frame with the
/// error's code and a short reason; closing TCP follows.
fn fail(peer: &Peer, error: ProtocolError) -> Ending {
    let payload = close_payload(error.close_code(), &error.to_string());
    let _ = peer.send(OpCode::Close, &payload);
    Ending::Failed(error)
}

/// §5.5.1: answer a close frame with a close frame; closing TCP follows
/// (§7.1.1: the server closes the TCP connection first).
fn answer_close(peer: &Peer, frame: Option<CloseFrame>) -> Ending {
    let _ = peer.send(OpCode::Close, &reply_payload(&frame));
    Ending::Closed(frame)
}
