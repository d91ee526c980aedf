//! The blocking layer: where the sans-I/O pieces above meet a real
//! `TcpStream`. It moves bytes and keeps time; every decision is the
//! session's ([`crate::session`]).
//!
//! [`read_request`] reads the opening handshake. After the `101`, a
//! [`Connection`] holds the socket and its [`Session`], shared by:
//!
//! - the *reader* (the client's own thread, [`run`]), which reads the
//!   socket into [`Session::receive_data`], hands each message on, and then
//!   sends what that read queued, for every client, without waiting
//!   (`Connection::flush`); it also keeps time, reading with a timeout
//!   that ends at the session's next deadline;
//! - any thread that broadcasts to this client ([`Connection::send_shared`]):
//!   it takes the session's lock, which is never held across a system call,
//!   adds to the queue, and leaves;
//! - the *writer*, a second thread of the client's own that exists only
//!   while its socket is full (`write_loop`). It is the only thread that
//!   ever waits on this client's socket.

use crate::handshake::{MAX_REQUEST_BYTES, Parse, Refusal, Request, parse_request};
use crate::message::Message;
use crate::os;
use crate::session::{CLOSE_TIMEOUT, Ending, NotSent, OutgoingFrame, Session, State};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The most bytes one `read` may bring in. (Public for the benchmark's
/// decoding figures, which read in pieces of this size too.)
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// The size of a connection's read buffer until a read fills it; it then
/// doubles, up to [`READ_BUFFER_SIZE`]. Most clients of a chat room are idle,
/// and an idle client's buffer is resident memory (docs/performance.md).
const FIRST_READ_BUFFER_SIZE: usize = 1024;

/// The most bytes a flush sends itself, without waiting. A bigger batch
/// goes to the client's writer thread: a send that never waits still
/// copies what it sends, and copying megabytes into the sockets of many
/// clients one after another, before the next client's turn, kept readers
/// waiting behind clients that never read (docs/performance.md).
const MAX_FLUSH_BYTES: usize = 64 * 1024;

/// Stack size of a writer thread: it only writes.
const WRITER_STACK_SIZE: usize = 64 * 1024;

/// Why reading the opening request stopped short.
#[derive(Debug)]
pub enum RequestError {
    /// The request is wrong: answer it with an HTTP error status.
    Invalid(Refusal),
    /// The client did not finish its request within the handshake timeout,
    /// after sending this many bytes of it.
    TimedOut(usize),
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
            RequestError::TimedOut(0) => write!(f, "sent nothing within the handshake timeout"),
            RequestError::TimedOut(_) => write!(f, "handshake timed out"),
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
            return Err(RequestError::TimedOut(buf.len()));
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
            Err(e) if is_timeout(&e) => return Err(RequestError::TimedOut(buf.len())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RequestError::Io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf).map_err(RequestError::Invalid)? {
            Parse::Complete(request, used) => return Ok((request, buf.split_off(used))),
            Parse::Partial => continue,
        }
    }
}

/// Whether a read or write failed because its timeout ran out.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes a complete HTTP response, then closes our side.
pub(crate) fn send_http(mut stream: &TcpStream, response: &[u8]) -> io::Result<()> {
    stream.write_all(response)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    drain_until_closed(stream);
    Ok(())
}

/// Reads and discards what the client still sends, for at most
/// [`CLOSE_TIMEOUT`], until it closes its side too.
///
/// Closing a socket that still has unread bytes makes the kernel send a RST
/// instead of a FIN, and a RST can destroy the last frame or response we
/// sent before the client reads it. Draining first avoids that.
fn drain_until_closed(mut stream: &TcpStream) {
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

/// One upgraded connection: the socket, and the session that its reader,
/// its writer and every broadcasting thread share.
#[derive(Debug)]
pub struct Connection {
    /// The client's name, as in `ID54321`.
    pub name: String,
    stream: TcpStream,
    shared: Mutex<Shared>,
    /// Signalled when a thread stops writing: [`finish`] waits for it
    /// before closing TCP.
    done_writing: Condvar,
    /// How long writing one batch may take before the client is given up on.
    write_timeout: Duration,
}

/// What the threads of a connection share, behind one lock that is never
/// held across a system call.
#[derive(Debug)]
struct Shared {
    session: Session,
    /// A thread is writing to the socket right now (one that is
    /// [`Connection::flush`]ing, or the writer): only one at a time, so that
    /// frames never interleave on the wire.
    writing: bool,
    /// Frames that a flush could not send without waiting, and how many of
    /// their bytes it did send: the writer thread sends the rest.
    handed_over: Option<(Vec<OutgoingFrame>, usize)>,
}

thread_local! {
    /// The connections this thread queued frames for since its last
    /// [`flush_queued`]: a reader queues the messages of one read for
    /// everyone, then sends them, one system call per client.
    static QUEUED: RefCell<Vec<Arc<Connection>>> = const { RefCell::new(Vec::new()) };
}

impl Connection {
    /// Wraps an upgraded stream and its session.
    pub fn new(
        name: String,
        stream: TcpStream,
        session: Session,
        write_timeout: Duration,
    ) -> Connection {
        Connection {
            name,
            stream,
            shared: Mutex::new(Shared {
                session,
                // Until the 101 is written (`send_handshake_response`), no
                // frame may go out: the socket counts as being written to.
                writing: true,
                handed_over: None,
            }),
            done_writing: Condvar::new(),
            write_timeout,
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // No code holding this lock can panic half-way through a change that
        // matters, so a poisoned lock is still sound.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` on the session. If the session gave up on the client
    /// (its queue overflowed, or a write failed), the socket is shut at
    /// once, which also ends a `read` or `write` another thread is blocked in.
    fn update<T>(&self, change: impl FnOnce(&mut Session) -> T) -> T {
        let (result, given_up) = {
            let mut shared = self.shared();
            let result = change(&mut shared.session);
            (result, shared.session.given_up())
        };
        if given_up {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        result
    }

    /// Queues a data frame that other clients' queues share. It goes out
    /// when this thread calls `flush_queued` (the reader does after every
    /// read), or from the client's writer thread if the socket is full.
    /// Nobody waits for this client.
    pub fn send_shared(self: &Arc<Self>, frame: &OutgoingFrame) -> Result<(), NotSent> {
        self.queue(|session| session.send_shared(frame))
    }

    /// Queues a data message for this client alone, as [`send_shared`](Self::send_shared) does.
    pub fn send_message(self: &Arc<Self>, message: Message) -> Result<(), NotSent> {
        self.queue(|session| session.send_message(message))
    }

    fn queue(
        self: &Arc<Self>,
        send: impl FnOnce(&mut Session) -> Result<(), NotSent>,
    ) -> Result<(), NotSent> {
        let (result, first) = self.update(|session| {
            let first = !session.has_outgoing();
            (send(session), first)
        });
        // Only the first frame in an empty queue needs a flush: the rest go
        // with it.
        if result.is_ok() && first {
            QUEUED.with(|queued| queued.borrow_mut().push(Arc::clone(self)));
        }
        result
    }

    /// Starts the closing handshake with `code` (from any thread).
    pub fn close(self: &Arc<Self>, code: u16, reason: &str) {
        self.update(|session| session.close(code, reason, Instant::now()));
        self.flush();
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.shared().session.state()
    }

    /// Writes the handshake's response (the `101`) to the socket itself.
    /// Called once, first: a new connection counts as being written to, so
    /// frames that broadcasts queue meanwhile wait in the queue, and go out
    /// after the 101.
    pub fn send_handshake_response(self: &Arc<Self>, response: &[u8]) -> io::Result<()> {
        self.stream.set_write_timeout(Some(self.write_timeout))?;
        (&self.stream).write_all(response)?;
        self.shared().writing = false;
        self.flush();
        Ok(())
    }

    /// Sends what the session has queued, as far as the socket takes it
    /// without waiting, unless another thread is writing already (then that
    /// thread sends it). What the socket does not take now is handed over to
    /// a writer thread, which may wait for it.
    fn flush(self: &Arc<Self>) {
        let mut shared = self.shared();
        if shared.writing {
            return;
        }
        // Frames queued while we send are ours to send too: the threads
        // that queued them saw us writing and left them.
        while shared.session.has_outgoing() {
            shared.writing = true;
            let batch = shared.session.take_outgoing();
            drop(shared);
            let pieces = wire_pieces(&batch);
            let total: usize = pieces.iter().map(|piece| piece.len()).sum();
            let sent = if total <= MAX_FLUSH_BYTES {
                os::send_without_blocking(&self.stream, &pieces)
            } else {
                Ok(0)
            };
            drop(pieces);
            shared = self.shared();
            match sent {
                Ok(n) if n == total => shared.writing = false,
                Ok(n) => {
                    // The socket is full: `writing` stays set, for the writer.
                    shared.handed_over = Some((batch, n));
                    drop(shared);
                    return self.start_writer();
                }
                Err(e) => {
                    shared.writing = false;
                    drop(shared);
                    return self.give_up(format!("write failed: {e}"));
                }
            }
        }
        if shared.session.state() == State::Closed {
            self.done_writing.notify_all();
        }
    }

    /// Starts a writer thread for what a flush handed over. If no thread
    /// can be had, the client cannot be served: it is given up on.
    fn start_writer(self: &Arc<Self>) {
        let connection = Arc::clone(self);
        // Linux allows 15 bytes for a thread name: `ID54321` fits with `>`.
        let started = thread::Builder::new()
            .name(format!("{}>", self.name))
            .stack_size(WRITER_STACK_SIZE)
            .spawn(move || write_loop(&connection));
        if let Err(e) = started {
            self.end_writing();
            self.give_up(format!("no thread for its writer: {e}"));
        }
    }

    /// Gives up on the client at once: nothing more is sent, and the socket
    /// is shut.
    pub fn give_up(&self, why: String) {
        self.update(|session| session.give_up(why));
    }

    /// Whoever was writing is done.
    fn end_writing(&self) {
        let mut shared = self.shared();
        shared.writing = false;
        shared.handed_over = None;
        self.done_writing.notify_all();
    }
}

/// Sends everything this thread has queued since it last called this, to
/// every client, without waiting for any of them (`Connection::flush`).
/// A reader calls it after each read; a thread that is not a reader and
/// queues frames (the Redis subscriber) calls it after each delivery.
pub fn flush_queued() {
    let queued = QUEUED.with(|queued| std::mem::take(&mut *queued.borrow_mut()));
    for connection in queued {
        connection.flush();
    }
}

/// The writer: a thread of the client's own that exists only while the
/// socket is full. It sends what a flush handed over, waiting as long as it
/// must (at most the write timeout for each batch), then whatever was queued
/// meanwhile, and ends once it has caught up.
fn write_loop(connection: &Connection) {
    loop {
        let (batch, already_sent) = {
            let mut shared = connection.shared();
            match shared.handed_over.take() {
                Some(handed_over) => handed_over,
                None if shared.session.has_outgoing() => (shared.session.take_outgoing(), 0),
                None => {
                    // Caught up. Under the same lock as the check, so that a
                    // flush never finds `writing` set by a writer that has
                    // already decided to stop.
                    shared.writing = false;
                    connection.done_writing.notify_all();
                    return;
                }
            }
        };
        if let Err(why) = write_batch(
            &connection.stream,
            &batch,
            already_sent,
            connection.write_timeout,
        ) {
            connection.give_up(why);
            return connection.end_writing();
        }
    }
}

/// The batch as the pieces of one `writev`: head, body, head, body, ...
pub fn wire_pieces(batch: &[OutgoingFrame]) -> Vec<IoSlice<'_>> {
    let mut pieces = Vec::with_capacity(2 * batch.len());
    for frame in batch {
        for piece in [frame.head(), frame.body()] {
            if !piece.is_empty() {
                pieces.push(IoSlice::new(piece));
            }
        }
    }
    pieces
}

/// Writes `batch`, from byte `already_sent` on, within `timeout` for the
/// whole batch. `Err` says why the client is given up on.
fn write_batch(
    stream: &TcpStream,
    batch: &[OutgoingFrame],
    already_sent: usize,
    timeout: Duration,
) -> Result<(), String> {
    let mut pieces = wire_pieces(batch);
    let mut pieces = &mut pieces[..];
    IoSlice::advance_slices(&mut pieces, already_sent);
    write_all_within(stream, pieces, timeout).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut => too_slow(),
        _ => format!("write failed: {e}"),
    })
}

/// Writes all of `pieces` within `timeout` in all, or fails with
/// `TimedOut`. The server's writers, the client and the Redis publisher
/// all write this way.
///
/// The socket's write timeout bounds one system call, and a call that makes
/// any progress starts it again: a peer reading a trickle could keep a
/// plain `write_all` going for ever. So the timeout of each call is cut to
/// what is left of the deadline.
pub fn write_all_within(
    mut stream: &TcpStream,
    mut pieces: &mut [IoSlice<'_>],
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !pieces.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        // `writev`: all the pieces in one system call, as far as the kernel
        // takes them.
        match stream.write_vectored(pieces) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut pieces, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn too_slow() -> String {
    "too slow: a write blocked for the whole write timeout".to_string()
}

/// The reader: runs an upgraded connection from its first frame to its end
/// and returns why it ended. `pending` holds bytes that arrived with the
/// handshake; each data message goes to `on_message`, in order.
///
/// It reads until the session is closed. The session's deadlines
/// (keep-alive, the close timeout) are the read's timeout: when a read
/// times out, the session is told the time ([`Session::tick`]).
pub fn run(
    connection: &Arc<Connection>,
    pending: &[u8],
    mut on_message: impl FnMut(Message),
) -> Ending {
    receive(connection, pending, &mut on_message);
    let mut buf = vec![0u8; FIRST_READ_BUFFER_SIZE];
    while connection.state() != State::Closed {
        let deadline = connection.shared().session.next_deadline();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout.is_some_and(|t| t.is_zero()) {
            connection.update(|session| session.tick(Instant::now()));
            connection.flush();
            continue;
        }
        if let Err(e) = connection.stream.set_read_timeout(timeout) {
            connection.give_up(format!("read failed: {e}"));
            continue;
        }
        let n = match (&connection.stream).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => continue, // the loop ticks the session
            Err(_) => 0,                          // reset: as good as closed
        };
        if n == 0 {
            connection.update(|session| session.receive_eof());
            break;
        }
        receive(connection, &buf[..n], &mut on_message);
        // A full buffer means more was probably waiting: read more at a time.
        if n == buf.len() && buf.len() < READ_BUFFER_SIZE {
            buf.resize(buf.len() * 2, 0);
        }
    }
    connection
        .shared()
        .session
        .ending()
        .cloned()
        .expect("bug: a closed session knows why")
}

/// Hands `bytes` to the session and each message they complete to
/// `on_message`, one at a time: the session's lock is let go before the
/// message is handed on (a broadcast takes every client's lock, this
/// one's too). Then sends what all that queued, for everyone.
fn receive(connection: &Arc<Connection>, mut bytes: &[u8], on_message: &mut impl FnMut(Message)) {
    loop {
        let (used, message) = connection.update(|session| session.receive_data(bytes));
        bytes = &bytes[used..];
        match message {
            Some(message) => on_message(message),
            None => break,
        }
    }
    connection.flush();
    flush_queued();
}

/// Ends the connection: sends what is still queued (the close frame, often),
/// waits until nobody is writing (the writer finishes within the write
/// timeout), closes our side of TCP first (§7.1.1: "the server SHOULD close
/// the underlying TCP connection first"), then reads until the client closes
/// its side too, for at most [`CLOSE_TIMEOUT`].
pub fn finish(connection: &Arc<Connection>) {
    connection.flush();
    let wait = connection.write_timeout + CLOSE_TIMEOUT;
    let shared = connection
        .done_writing
        .wait_timeout_while(connection.shared(), wait, |shared| shared.writing)
        .map(|(shared, _)| shared)
        .unwrap_or_else(|e| e.into_inner().0);
    drop(shared);
    let _ = connection.stream.shutdown(Shutdown::Write);
    drain_until_closed(&connection.stream);
}
