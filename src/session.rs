//! The session (RFC 6455 §5-§7): what one end of a connection must do,
//! with no socket in sight.
//!
//! A [`Session`] is handed the bytes that arrived ([`Session::receive_data`])
//! and the time; it answers with the messages they complete, one at a time,
//! and keeps a queue of frames to send ([`Session::take_outgoing`]). Everything the RFC
//! asks an endpoint to do by itself happens here:
//!
//! - answer a ping with a pong (§5.5.2); when the queue is full, the pong
//!   for the latest ping replaces the one still waiting (§5.5.3 allows one
//!   pong for several pings), so pings never pile up pongs;
//! - answer a close frame with a close frame (§5.5.1), and send nothing
//!   after a close: no data frame, no pong;
//! - fail the connection with the right close code when the other side
//!   breaks a rule (§7.1.7);
//! - read nothing after the close (§1.4: the close is the last frame);
//! - keep-alive: ping every interval, and close with 1008 a peer that has
//!   not answered a ping by the next one, whatever else it sends;
//! - bound what waits to be sent, so that a peer that stops reading cannot
//!   make the queue grow without limit.
//!
//! The caller (the blocking layer, [`crate::connection`]) only moves bytes
//! and keeps time: it reads the socket into `receive_data`, writes what
//! `take_outgoing` returns, and closes TCP when the session is
//! [`State::Closed`]. Time is an argument (`now`), never read from the clock
//! here, so the tests below run keep-alive and close timeouts with a fake
//! clock, in microseconds.
//!
//! The state mirrors a browser's `WebSocket.readyState` once the handshake
//! is done:
//!
//! ```text
//!   (handshake: CONNECTING)
//!            |
//!            v                 we send a close
//!          OPEN  ---------------------------------------+
//!            |                                          v
//!            | a close arrives (we answer it),       CLOSING  (waiting for
//!            | a protocol error (we send the code),     |      the reply)
//!            | the peer closes TCP, or a write fails    | the reply arrives,
//!            v                                          | or the close timeout
//!         CLOSED  <-------------------------------------+
//!            |
//!            v  the caller sends what is queued, then closes TCP
//! ```
//!
//! Which side we are ([`Role`]) is a parameter: a server requires masked
//! frames and sends unmasked ones, a client the other way round (§5.1).

use crate::close::{CloseFrame, close_payload, reply_payload};
use crate::error::{ProtocolError, code};
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, Role, encode_frame};
use crate::mask::apply_mask;
use crate::message::{Budget, Event, Message, MessageReader, preview};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The payload of the keep-alive pings; a pong must carry it back (§5.5.3:
/// a pong has "identical Application data" to the ping it answers).
pub const PING_PAYLOAD: &[u8] = b"wschat";

/// How long we wait for the other side's close frame after sending ours.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a closing handshake may take when the peer is still sending
/// ([`Session::peer_still_sending`]).
pub const MAX_CLOSING: Duration = Duration::from_secs(30);

/// What a queued frame costs in memory beyond its bytes: its place in the
/// queue, the shared payload's reference count, and the allocator's
/// bookkeeping for the header and the payload. Counting it means that a
/// queue of a million empty frames costs what it really costs, not zero.
pub const FRAME_OVERHEAD: usize = 128;

/// The connection's state, as a browser's `readyState` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and are waiting for the other side's.
    Closing,
    /// The closing handshake is over (or the connection failed): nothing
    /// more is read; the caller sends what is queued and closes TCP.
    Closed,
}

/// What a session is allowed to hold and how it keeps time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The largest message accepted, after reassembly (1009 above it).
    pub max_message: usize,
    /// The most the queue of bytes to send may cost (see
    /// [`FRAME_OVERHEAD`]) before the peer counts as too slow.
    pub max_queued: usize,
    /// Ping every interval; `None` turns keep-alive off.
    pub ping_interval: Option<Duration>,
    /// Where a client's masking keys come from (§5.3: they must be
    /// unpredictable). A server never masks: `None`.
    pub mask_key: Option<fn() -> [u8; 4]>,
    /// The memory all connections' unfinished messages share
    /// (`--max-buffered`), if limited.
    pub budget: Option<Arc<Budget>>,
}

/// A whole frame, ready for the wire: `head` then `body`.
///
/// A broadcast encodes its frame once, header and payload together, as the
/// body ([`OutgoingFrame::server`]), and every recipient's queue holds the
/// same body: one piece to send, shared by all. A frame for one peer keeps
/// its header apart, as the head, so that its payload goes out from the
/// very buffer it came in, uncopied: an echoed message may be 16 MiB.
///
/// The body is an `Arc<Vec<u8>>` rather than an `Arc<[u8]>` because a `Vec`
/// moves into it without being copied.
#[derive(Debug, Clone)]
pub struct OutgoingFrame {
    head: [u8; MAX_HEADER_LEN],
    head_len: usize,
    body: Arc<Vec<u8>>,
}

impl OutgoingFrame {
    /// A server's frame (FIN set, not masked, §5.1) carrying `payload`,
    /// encoded whole to be shared.
    pub fn server(opcode: OpCode, payload: &[u8]) -> OutgoingFrame {
        let mut bytes = Vec::new();
        encode_frame(opcode, payload, &mut bytes);
        OutgoingFrame {
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            body: Arc::new(bytes),
        }
    }

    /// A frame with `header` and `payload` (already masked if the header
    /// says so), the payload uncopied.
    fn new(header: FrameHeader, payload: Vec<u8>) -> OutgoingFrame {
        let mut encoded = Vec::with_capacity(MAX_HEADER_LEN);
        header.encode(&mut encoded);
        let mut head = [0; MAX_HEADER_LEN];
        head[..encoded.len()].copy_from_slice(&encoded);
        OutgoingFrame {
            head,
            head_len: encoded.len(),
            body: Arc::new(payload),
        }
    }

    /// The bytes to send first (empty if the body is the whole frame).
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// The bytes to send after the head.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// What it costs while it waits in a queue: its bytes, and
    /// [`FRAME_OVERHEAD`].
    fn cost(&self) -> usize {
        self.head_len + self.body.len() + FRAME_OVERHEAD
    }
}

/// Why a connection ended; the first reason is kept, so the log says what
/// really happened first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The peer started the closing handshake, and we answered.
    ClosedByPeer(Option<CloseFrame>),
    /// We started the closing handshake with this code and reason.
    ClosedByUs(u16, String),
    /// The peer broke the protocol; we sent the error's close code.
    Failed(ProtocolError),
    /// The peer did not answer a ping by the next one; we sent 1008.
    PingTimeout,
    /// TCP ended without a closing handshake.
    Dropped,
    /// We gave up on the peer: too slow to read, or a failed write.
    GivenUp(String),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::ClosedByPeer(Some(frame)) => {
                write!(f, "closed by client with {} {:?}", frame.code, frame.reason)
            }
            Ending::ClosedByPeer(None) => write!(f, "closed by client without a code"),
            Ending::ClosedByUs(code, reason) => {
                write!(f, "closed by the server with {code} {reason:?}")
            }
            Ending::Failed(e) => write!(f, "failed with {}: {e}", e.close_code()),
            Ending::PingTimeout => write!(f, "no pong within the ping interval"),
            Ending::Dropped => write!(f, "connection dropped without a close frame"),
            Ending::GivenUp(why) => write!(f, "dropped by the server: {why}"),
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// The connection is closing or closed (§5.5.1: no data after a close).
    NotOpen,
    /// The queue was full: the peer has been given up on.
    TooSlow,
}

/// Keep-alive, as two deadlines on the caller's clock.
#[derive(Debug)]
struct KeepAlive {
    interval: Duration,
    /// When the next ping is due (and an unanswered one runs out).
    next_ping: Instant,
    /// Whether a ping is out and not yet answered.
    awaiting_pong: bool,
}

/// One end of a WebSocket connection, after the handshake.
#[derive(Debug)]
pub struct Session {
    role: Role,
    /// Names the peer in `trace` log lines.
    name: String,
    settings: Settings,
    state: State,
    reader: MessageReader,
    queue: VecDeque<OutgoingFrame>,
    /// What `queue` costs, in bytes (see [`FRAME_OVERHEAD`]).
    queued_cost: usize,
    /// Where in `queue` the last pong waits, until the writer takes it.
    waiting_pong: Option<usize>,
    keepalive: Option<KeepAlive>,
    /// While [`State::Closing`]: when we stop waiting for the peer's close.
    close_deadline: Option<Instant>,
    /// When we sent our close frame.
    close_sent_at: Option<Instant>,
    ending: Option<Ending>,
    /// Set by [`give_up`](Self::give_up): the connection ends without ceremony.
    given_up: bool,
    /// Whether the peer's close frame has arrived.
    close_received: bool,
}

impl Session {
    /// A session for `role`'s end of an open connection to `name`, starting
    /// its clocks at `now`.
    pub fn new(role: Role, name: &str, settings: Settings, now: Instant) -> Session {
        let keepalive = settings.ping_interval.map(|interval| KeepAlive {
            interval,
            next_ping: now + interval,
            awaiting_pong: false,
        });
        let mut reader = MessageReader::new(role, settings.max_message, name);
        if let Some(budget) = &settings.budget {
            reader = reader.with_budget(Arc::clone(budget));
        }
        Session {
            role,
            name: name.to_string(),
            reader,
            settings,
            state: State::Open,
            queue: VecDeque::new(),
            queued_cost: 0,
            waiting_pong: None,
            keepalive,
            close_deadline: None,
            close_sent_at: None,
            ending: None,
            given_up: false,
            close_received: false,
        }
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the peer's close frame has arrived: with ours sent, the
    /// closing handshake is complete (§7.1.3).
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Why the connection ended (or is ending), once it has a reason.
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    // ----- bytes in ------------------------------------------------------

    /// Reads `bytes` from the front until a data message is complete,
    /// reacting to every control frame and error on the way. Returns how
    /// many bytes it used and the message, if one was completed: call again
    /// with the rest.
    ///
    /// One message at a time, so that the caller can act on it (echo it,
    /// broadcast it) before anything after it is read: a message that
    /// arrived before a bad frame is answered before the close frame that
    /// the bad frame brings.
    pub fn receive_data(&mut self, bytes: &[u8]) -> (usize, Option<Message>) {
        let mut used = 0;
        while self.state != State::Closed {
            let mut events = self.reader.read(&bytes[used..]);
            let event = events.next();
            used = bytes.len() - events.rest().len();
            match event {
                None => return (used, None),
                // Also while closing: the peer sent it before it saw our
                // close, and §5.5.1 forbids only *sending* data after one.
                Some(Ok(Event::Message(message))) => return (used, Some(message)),
                Some(Ok(Event::Ping(payload))) => self.receive_ping(payload),
                Some(Ok(Event::Pong(payload))) => self.receive_pong(&payload),
                Some(Ok(Event::Close(frame))) => self.receive_close(frame),
                Some(Err(error)) => self.fail(error),
            }
        }
        // Nothing is read after the close: the rest is thrown away.
        (bytes.len(), None)
    }

    /// §5.5.2: a ping is answered with a pong carrying its payload, and
    /// nothing is sent after our close. If the queue is full and a pong is
    /// still waiting in it, that pong takes the new payload instead: §5.5.3
    /// lets an endpoint answer only the most recent of several pings.
    fn receive_ping(&mut self, payload: Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        let pong = self.frame(OpCode::Pong, payload);
        match self.waiting_pong {
            Some(i) if self.queued_cost + pong.cost() > self.settings.max_queued => {
                trace(&self.name, self.role, &pong);
                self.queued_cost = self.queued_cost - self.queue[i].cost() + pong.cost();
                self.queue[i] = pong;
            }
            _ => {
                self.push(pong);
                if self.state == State::Open {
                    self.waiting_pong = Some(self.queue.len() - 1);
                }
            }
        }
    }

    /// A pong answers our keep-alive ping if it carries the ping's payload;
    /// any other pong is an unsolicited heartbeat, which needs no answer.
    fn receive_pong(&mut self, payload: &[u8]) {
        if let Some(keepalive) = &mut self.keepalive
            && payload == PING_PAYLOAD
        {
            keepalive.awaiting_pong = false;
        }
    }

    /// §5.5.1: a close frame is answered with one, unless it answers ours.
    fn receive_close(&mut self, frame: Option<CloseFrame>) {
        self.close_received = true;
        if self.state == State::Open {
            self.push_frame(OpCode::Close, reply_payload(&frame));
            self.end(Ending::ClosedByPeer(frame));
        }
        self.set_closed();
    }

    /// §7.1.7 "_Fail the WebSocket Connection_": send a close frame with the
    /// error's code (unless ours is already sent), then close TCP.
    fn fail(&mut self, error: ProtocolError) {
        if self.state == State::Open {
            let payload = close_payload(error.close_code(), &error.to_string());
            self.push_frame(OpCode::Close, payload);
        }
        self.end(Ending::Failed(error));
        self.set_closed();
    }

    /// The peer closed TCP (or the socket failed): the connection is over.
    pub fn receive_eof(&mut self) {
        self.end(Ending::Dropped);
        self.set_closed();
    }

    // ----- time ----------------------------------------------------------

    /// The next time [`tick`](Self::tick) has something to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Open => self.keepalive.as_ref().map(|k| k.next_ping),
            State::Closing => self.close_deadline,
            State::Closed => None,
        }
    }

    /// Acts on the deadlines that have passed by `now`: a keep-alive ping
    /// is due, an unanswered one has run out (1008), or the peer did not
    /// answer our close in time.
    pub fn tick(&mut self, now: Instant) {
        if self.state == State::Closing && self.close_deadline.is_some_and(|d| now >= d) {
            self.set_closed();
        }
        let Some(keepalive) = &mut self.keepalive else {
            return;
        };
        if self.state != State::Open || now < keepalive.next_ping {
            return;
        }
        keepalive.next_ping = now + keepalive.interval;
        if keepalive.awaiting_pong {
            self.end(Ending::PingTimeout);
            self.close(code::POLICY_VIOLATION, "no pong", now);
        } else {
            keepalive.awaiting_pong = true;
            self.push_frame(OpCode::Ping, PING_PAYLOAD.to_vec());
        }
    }

    // ----- bytes out -----------------------------------------------------

    /// Queues a data message for the peer, as one frame.
    pub fn send_message(&mut self, message: Message) -> Result<(), NotSent> {
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Text, text.into_bytes()),
            Message::Binary(data) => (OpCode::Binary, data),
        };
        let frame = self.frame(opcode, payload);
        self.send_data_frame(frame)
    }

    /// Queues a data frame that other sessions may share too (a
    /// broadcast): the bytes are not copied. Only a server's frames can be
    /// shared; a client masks each frame with a key of its own.
    pub fn send_shared(&mut self, frame: &OutgoingFrame) -> Result<(), NotSent> {
        assert_eq!(self.role, Role::Server, "bug: a client cannot share frames");
        self.send_data_frame(frame.clone())
    }

    fn send_data_frame(&mut self, frame: OutgoingFrame) -> Result<(), NotSent> {
        // §5.5.1: "After sending a Close frame, the endpoint MUST NOT send
        // any more data frames."
        if self.state != State::Open {
            return Err(NotSent::NotOpen);
        }
        self.push(frame);
        if self.state == State::Closed {
            return Err(NotSent::TooSlow);
        }
        Ok(())
    }

    /// Starts the closing handshake (§7.1.2) with `code` and `reason`: our
    /// close frame goes out, and the peer has [`CLOSE_TIMEOUT`] to answer.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) {
        if self.state != State::Open {
            return;
        }
        self.end(Ending::ClosedByUs(code, reason.to_string()));
        self.push_frame(OpCode::Close, close_payload(code, reason));
        if self.state == State::Open {
            self.state = State::Closing;
            self.close_deadline = Some(now + CLOSE_TIMEOUT);
            self.close_sent_at = Some(now);
        }
    }

    /// While CLOSING, bytes have just arrived: the peer is still sending
    /// what it sent before it saw our close, and its close reply is behind
    /// them. So its [`CLOSE_TIMEOUT`] counts from now, up to
    /// [`MAX_CLOSING`] after our close. The client calls this: a server
    /// with much to send it (the echoes of a long paste) is slow to reach
    /// the close, not gone. The server does not: a client that kept
    /// trickling bytes could then hold a stopping server.
    pub fn peer_still_sending(&mut self, now: Instant) {
        if let (State::Closing, Some(sent)) = (self.state, self.close_sent_at) {
            self.close_deadline = Some((now + CLOSE_TIMEOUT).min(sent + MAX_CLOSING));
        }
    }

    /// Gives up on the peer (a write failed or timed out, or the queue is
    /// full): nothing more is sent, and what was queued is dropped.
    pub fn give_up(&mut self, why: String) {
        self.end(Ending::GivenUp(why));
        self.given_up = true;
        self.set_closed();
        self.queue.clear();
        self.queued_cost = 0;
        self.waiting_pong = None;
    }

    /// Whether [`give_up`](Self::give_up) was called: the caller closes TCP
    /// at once, without sending anything more.
    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// Everything waiting to be sent, in order, leaving the queue empty.
    pub fn take_outgoing(&mut self) -> Vec<OutgoingFrame> {
        self.queued_cost = 0;
        self.waiting_pong = None;
        self.queue.drain(..).collect()
    }

    /// Whether anything is waiting to be sent.
    pub fn has_outgoing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Makes a frame of `payload` and queues it.
    fn push_frame(&mut self, opcode: OpCode, payload: Vec<u8>) {
        let frame = self.frame(opcode, payload);
        self.push(frame);
    }

    /// Queues `outgoing`, unless that takes the queue past its bound: then
    /// the peer is too slow, and is given up on.
    fn push(&mut self, outgoing: OutgoingFrame) {
        let cost = outgoing.cost();
        if self.queued_cost + cost > self.settings.max_queued {
            let max = self.settings.max_queued;
            self.give_up(format!("too slow: over {max} bytes waiting to be sent"));
            return;
        }
        trace(&self.name, self.role, &outgoing);
        self.queued_cost += cost;
        self.queue.push_back(outgoing);
    }

    /// One whole frame (FIN set) carrying `payload`, masked with a fresh
    /// key if we are the client (§5.3).
    fn frame(&self, opcode: OpCode, mut payload: Vec<u8>) -> OutgoingFrame {
        let key = match self.role {
            Role::Server => {
                return OutgoingFrame::new(FrameHeader::server(opcode, payload.len()), payload);
            }
            Role::Client => (self
                .settings
                .mask_key
                .expect("bug: a client needs mask keys"))(),
        };
        apply_mask(&mut payload, key, 0);
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        OutgoingFrame::new(header, payload)
    }

    /// The connection is over: nothing more is read, so the memory its
    /// unfinished message took from the shared budget goes back.
    fn set_closed(&mut self) {
        self.state = State::Closed;
        self.reader.give_back_budget();
    }

    /// Records why the connection ends, unless a reason is already known.
    fn end(&mut self, ending: Ending) {
        self.ending.get_or_insert(ending);
    }
}

/// One `trace` line for a frame queued for `name`, in the same format as
/// the frames received.
fn trace(name: &str, role: Role, frame: &OutgoingFrame) {
    if !log::log_enabled!(log::Level::Trace) {
        return;
    }
    let bytes = [frame.head(), frame.body()].concat();
    let Ok(Some((header, header_len))) = FrameHeader::parse(&bytes) else {
        unreachable!("bug: a frame of our own does not parse");
    };
    // A client's payload is masked: show it unmasked, as the other side
    // will read it.
    let mut payload = bytes[header_len..].to_vec();
    if let Some(key) = header.mask {
        apply_mask(&mut payload, key, 0);
    }
    let arrow = role.sent_arrow();
    log::trace!("{name} {arrow} {header} payload={}", preview(&payload));
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const TEXT: u8 = 0x81;
    const BINARY: u8 = 0x82;
    const CLOSE: u8 = 0x88;
    const PING: u8 = 0x89;
    const PONG: u8 = 0x8A;
    const SECOND: Duration = Duration::from_secs(1);

    /// A masked frame as a client sends it: `first` is the whole first byte
    /// (FIN, RSV, opcode).
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(KEY);
        let start = out.len();
        out.extend(payload);
        apply_mask(&mut out[start..], KEY, 0);
        out
    }

    fn settings() -> Settings {
        Settings {
            max_message: 1000,
            max_queued: 1 << 20,
            ping_interval: None,
            mask_key: None,
            budget: None,
        }
    }

    fn server_with(settings: Settings, now: Instant) -> Session {
        Session::new(Role::Server, "test", settings, now)
    }

    fn server() -> Session {
        server_with(settings(), Instant::now())
    }

    /// Hands `input` to the session, collecting every message it completes.
    fn receive(session: &mut Session, mut input: &[u8]) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let (used, message) = session.receive_data(input);
            assert!(used <= input.len());
            input = &input[used..];
            match message {
                Some(message) => messages.push(message),
                None => break,
            }
        }
        assert!(input.is_empty(), "input left over");
        messages
    }

    /// Everything the session wants to send, as the bytes on the wire.
    fn sent(session: &mut Session) -> Vec<u8> {
        let mut bytes = Vec::new();
        for out in session.take_outgoing() {
            bytes.extend(out.head());
            bytes.extend(out.body());
        }
        bytes
    }

    /// The server frames (unmasked) in `bytes`, as (first byte, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Ok(Some((header, len))) = FrameHeader::parse(bytes) {
            assert!(header.mask.is_none(), "a server frame is masked");
            let end = len + header.payload_len as usize;
            frames.push((bytes[0], bytes[len..end].to_vec()));
            bytes = &bytes[end..];
        }
        assert!(bytes.is_empty(), "trailing bytes");
        frames
    }

    /// Feeds `input` to a fresh server session; returns the close code it
    /// answers with (`Some(None)` for an empty close), checking that the
    /// close is the last thing it sends and that it is then closed.
    fn close_code_for(input: &[u8]) -> Option<Option<u16>> {
        let mut session = server();
        receive(&mut session, input);
        assert_eq!(session.state(), State::Closed);
        let sent = frames(&sent(&mut session));
        let (first, payload) = sent.last()?;
        assert_eq!(*first, CLOSE);
        Some(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
    }

    // ----- the twins of tests/protocol_errors.rs -------------------------

    #[test]
    fn unmasked_client_frame_is_1002() {
        assert_eq!(close_code_for(&[TEXT, 2, b'h', b'i']), Some(Some(1002)));
    }

    #[test]
    fn rsv_bits_are_1002() {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            let input = client_frame(TEXT | rsv, b"hi");
            assert_eq!(close_code_for(&input), Some(Some(1002)), "{rsv:#x}");
        }
    }

    #[test]
    fn reserved_opcodes_are_1002() {
        for opcode in [0x3, 0x7, 0xB, 0xF] {
            let input = client_frame(0x80 | opcode, b"");
            assert_eq!(close_code_for(&input), Some(Some(1002)), "{opcode:#x}");
        }
    }

    #[test]
    fn fragmented_control_frame_is_1002() {
        assert_eq!(
            close_code_for(&client_frame(0x09, b"ping")),
            Some(Some(1002))
        );
    }

    #[test]
    fn control_frame_over_125_bytes_is_1002() {
        assert_eq!(
            close_code_for(&client_frame(PING, &[b'x'; 126])),
            Some(Some(1002))
        );
    }

    #[test]
    fn continuation_without_start_is_1002() {
        assert_eq!(
            close_code_for(&client_frame(0x80, b"orphan")),
            Some(Some(1002))
        );
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_1002() {
        let input = [client_frame(0x01, b"a"), client_frame(TEXT, b"b")].concat();
        assert_eq!(close_code_for(&input), Some(Some(1002)));
    }

    #[test]
    fn non_minimal_length_is_1002() {
        let mut input = vec![BINARY, 0x80 | 126, 0, 5];
        input.extend(KEY);
        input.extend(b"abcde");
        assert_eq!(close_code_for(&input), Some(Some(1002)));
    }

    #[test]
    fn invalid_utf8_is_1007() {
        assert_eq!(
            close_code_for(&client_frame(TEXT, b"bad \xff byte")),
            Some(Some(1007))
        );
    }

    #[test]
    fn invalid_utf8_fails_at_its_fragment_before_the_message_ends() {
        let input = [
            client_frame(0x01, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4"),
            client_frame(0x00, b"\x90\x80\x80"),
        ]
        .concat();
        assert_eq!(close_code_for(&input), Some(Some(1007)));
    }

    #[test]
    fn one_byte_close_payload_is_1002() {
        assert_eq!(
            close_code_for(&client_frame(CLOSE, &[0x03])),
            Some(Some(1002))
        );
    }

    #[test]
    fn invalid_close_codes_are_1002() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let input = client_frame(CLOSE, &code.to_be_bytes());
            assert_eq!(close_code_for(&input), Some(Some(1002)), "code {code}");
        }
    }

    #[test]
    fn close_reason_not_utf8_is_1007() {
        let input = client_frame(CLOSE, &[0x03, 0xE8, b'b', 0xFF]);
        assert_eq!(close_code_for(&input), Some(Some(1007)));
    }

    #[test]
    fn valid_close_codes_are_echoed() {
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let payload = [&code.to_be_bytes()[..], b"bye"].concat();
            let input = client_frame(CLOSE, &payload);
            assert_eq!(close_code_for(&input), Some(Some(code)), "code {code}");
        }
    }

    #[test]
    fn empty_close_is_answered_with_an_empty_close() {
        assert_eq!(close_code_for(&client_frame(CLOSE, b"")), Some(None));
    }

    #[test]
    fn message_over_max_message_is_1009() {
        // The header alone is enough.
        let header = &client_frame(BINARY, &[0; 1001])[..8];
        assert_eq!(close_code_for(header), Some(Some(1009)));
        let input = [client_frame(0x02, &[1; 600]), client_frame(0x80, &[2; 401])].concat();
        assert_eq!(close_code_for(&input), Some(Some(1009)));
    }

    #[test]
    fn message_of_exactly_max_message_is_delivered() {
        let mut session = server();
        let messages = receive(&mut session, &client_frame(BINARY, &[9; 1000]));
        assert_eq!(messages, vec![Message::Binary(vec![9; 1000])]);
        assert_eq!(session.state(), State::Open);
        assert!(sent(&mut session).is_empty());
    }

    // ----- the reactions the RFC asks for ---------------------------------

    #[test]
    fn a_ping_is_answered_with_its_payload() {
        let mut session = server();
        receive(&mut session, &client_frame(PING, b"are you there"));
        assert_eq!(
            frames(&sent(&mut session)),
            vec![(PONG, b"are you there".to_vec())]
        );
    }

    #[test]
    fn every_ping_is_answered_in_order() {
        // Autobahn's case 2.10: ten pings in one read get ten pongs.
        let mut session = server();
        let pings: Vec<u8> = (0..10u8).flat_map(|i| client_frame(PING, &[i])).collect();
        receive(&mut session, &pings);
        let expected: Vec<_> = (0..10u8).map(|i| (PONG, vec![i])).collect();
        assert_eq!(frames(&sent(&mut session)), expected);
    }

    #[test]
    fn when_the_queue_is_full_the_waiting_pong_takes_the_latest_payload() {
        let data_cost = 100 + MAX_HEADER_LEN + FRAME_OVERHEAD;
        let pong_cost = 4 + MAX_HEADER_LEN + FRAME_OVERHEAD;
        let mut session = server_with(
            Settings {
                max_queued: data_cost + pong_cost,
                ..settings()
            },
            Instant::now(),
        );
        session.send_message(Message::Binary(vec![1; 100])).unwrap();
        for i in 0..10_000u32 {
            receive(&mut session, &client_frame(PING, &i.to_be_bytes()));
        }
        assert_eq!(session.state(), State::Open);
        let sent = frames(&sent(&mut session));
        assert_eq!(sent[1], (PONG, 9_999u32.to_be_bytes().to_vec()));
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn a_ping_that_finds_the_queue_full_and_no_pong_waiting_gives_up() {
        let mut session = server_with(
            Settings {
                max_queued: 100 + MAX_HEADER_LEN + FRAME_OVERHEAD,
                ..settings()
            },
            Instant::now(),
        );
        session.send_message(Message::Binary(vec![1; 100])).unwrap();
        receive(&mut session, &client_frame(PING, b"one too many"));
        assert_eq!(session.state(), State::Closed);
        assert!(session.given_up());
        assert!(!session.has_outgoing());
    }

    #[test]
    fn a_message_before_a_bad_frame_is_handed_on_before_the_close() {
        // Autobahn's case 3.2: text, then a frame with RSV bits, then a ping.
        let mut session = server();
        let input = [
            client_frame(TEXT, b"Hello, world!"),
            client_frame(TEXT | 0x20, b"Hello, world!"),
            client_frame(PING, b""),
        ]
        .concat();
        let (used, message) = session.receive_data(&input);
        assert_eq!(message, Some(Message::Text("Hello, world!".into())));
        assert_eq!(session.state(), State::Open);
        // The caller echoes it, then reads on.
        session.send_message(message.unwrap()).unwrap();
        assert_eq!(
            session.receive_data(&input[used..]),
            (input.len() - used, None)
        );
        let sent = frames(&sent(&mut session));
        assert_eq!(sent[0], (TEXT, b"Hello, world!".to_vec()));
        assert_eq!(sent[1].0, CLOSE);
        assert_eq!(&sent[1].1[..2], &1002u16.to_be_bytes());
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn a_ping_between_fragments_is_answered_and_the_message_completes() {
        let mut session = server();
        let input = [
            client_frame(0x01, b"frag"),
            client_frame(PING, b"p"),
            client_frame(0x80, b"mented"),
        ]
        .concat();
        for piece in input.chunks(3) {
            let messages = receive(&mut session, piece);
            if !messages.is_empty() {
                assert_eq!(messages, vec![Message::Text("fragmented".into())]);
            }
        }
        assert_eq!(frames(&sent(&mut session)), vec![(PONG, b"p".to_vec())]);
    }

    #[test]
    fn nothing_is_sent_or_read_after_a_close() {
        let mut session = server();
        let input = [
            client_frame(PING, b"before"),
            client_frame(CLOSE, &1000u16.to_be_bytes()),
            client_frame(TEXT, b"after the close"),
            client_frame(PING, b"after"),
        ]
        .concat();
        assert!(receive(&mut session, &input).is_empty());
        let later = client_frame(TEXT, b"later");
        assert_eq!(session.receive_data(&later), (later.len(), None));
        assert_eq!(
            session.send_message(Message::Text("late".into())),
            Err(NotSent::NotOpen)
        );
        // The pong for the ping before the close, then the close reply.
        assert_eq!(
            frames(&sent(&mut session)),
            vec![(PONG, b"before".to_vec()), (CLOSE, vec![0x03, 0xE8])]
        );
        assert_eq!(
            session.ending(),
            Some(&Ending::ClosedByPeer(Some(CloseFrame {
                code: 1000,
                reason: String::new()
            })))
        );
    }

    #[test]
    fn our_close_waits_for_the_reply_and_still_delivers_data_meanwhile() {
        let start = Instant::now();
        let mut session = server_with(settings(), start);
        session.close(code::GOING_AWAY, "server stopping", start);
        assert_eq!(session.state(), State::Closing);
        assert_eq!(session.next_deadline(), Some(start + CLOSE_TIMEOUT));
        let sent_close = frames(&sent(&mut session));
        assert_eq!(sent_close[0].0, CLOSE);
        assert_eq!(&sent_close[0].1[..2], &1001u16.to_be_bytes());
        // Data that crosses our close is still delivered (it was sent
        // first); a ping is not answered: nothing is sent after our close.
        let input = [client_frame(TEXT, b"crossing"), client_frame(PING, b"x")].concat();
        assert_eq!(
            receive(&mut session, &input),
            vec![Message::Text("crossing".into())]
        );
        assert!(!session.has_outgoing());
        assert!(matches!(
            session.send_message(Message::Text("no".into())),
            Err(NotSent::NotOpen)
        ));
        // The reply completes the handshake; it is not answered again.
        receive(&mut session, &client_frame(CLOSE, &1001u16.to_be_bytes()));
        assert_eq!(session.state(), State::Closed);
        assert!(!session.has_outgoing());
        assert_eq!(
            session.ending(),
            Some(&Ending::ClosedByUs(1001, "server stopping".into()))
        );
    }

    #[test]
    fn a_peer_still_sending_gets_the_close_timeout_from_its_last_bytes_up_to_a_limit() {
        let start = Instant::now();
        let mut session = server_with(settings(), start);
        session.peer_still_sending(start); // not closing: nothing changes
        assert_eq!(session.next_deadline(), None);
        session.close(code::NORMAL, "", start);
        session.peer_still_sending(start + SECOND);
        assert_eq!(
            session.next_deadline(),
            Some(start + SECOND + CLOSE_TIMEOUT)
        );
        session.peer_still_sending(start + 29 * SECOND);
        assert_eq!(session.next_deadline(), Some(start + MAX_CLOSING));
        session.tick(start + MAX_CLOSING);
        assert_eq!(session.state(), State::Closed);
    }

    #[test]
    fn our_close_gives_up_waiting_after_the_close_timeout() {
        let start = Instant::now();
        let mut session = server_with(settings(), start);
        session.close(code::GOING_AWAY, "bye", start);
        session.tick(start + CLOSE_TIMEOUT - Duration::from_millis(1));
        assert_eq!(session.state(), State::Closing);
        session.tick(start + CLOSE_TIMEOUT);
        assert_eq!(session.state(), State::Closed);
        assert_eq!(session.next_deadline(), None);
    }

    // ----- keep-alive on a fake clock ------------------------------------

    fn pinging(start: Instant) -> Session {
        let settings = Settings {
            ping_interval: Some(2 * SECOND),
            ..settings()
        };
        server_with(settings, start)
    }

    #[test]
    fn a_peer_that_never_answers_is_closed_with_1008_one_interval_after_the_ping() {
        let start = Instant::now();
        let mut session = pinging(start);
        assert_eq!(session.next_deadline(), Some(start + 2 * SECOND));
        session.tick(start + SECOND);
        assert!(!session.has_outgoing());
        session.tick(start + 2 * SECOND);
        assert_eq!(
            frames(&sent(&mut session)),
            vec![(PING, PING_PAYLOAD.to_vec())]
        );
        // It trickles data all the while, and never answers the ping.
        for i in 1..20 {
            receive(&mut session, &client_frame(TEXT, b"."));
            session.tick(start + 2 * SECOND + i * Duration::from_millis(99));
        }
        assert_eq!(session.state(), State::Open);
        session.tick(start + 4 * SECOND);
        assert_eq!(session.state(), State::Closing);
        let sent = frames(&sent(&mut session));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, CLOSE);
        assert_eq!(
            &sent[0].1,
            &[&1008u16.to_be_bytes()[..], b"no pong"].concat()
        );
        assert_eq!(session.ending(), Some(&Ending::PingTimeout));
    }

    #[test]
    fn a_peer_that_answers_stays_even_in_the_middle_of_a_message() {
        let start = Instant::now();
        let mut session = pinging(start);
        let pong = client_frame(PONG, PING_PAYLOAD);
        receive(&mut session, &client_frame(0x01, b"a slow "));
        for round in 1..=10 {
            let now = start + round * 2 * SECOND;
            session.tick(now);
            assert_eq!(
                frames(&sent(&mut session)),
                vec![(PING, PING_PAYLOAD.to_vec())]
            );
            receive(&mut session, &pong);
            receive(&mut session, &client_frame(0x00, b"message "));
        }
        let done = receive(&mut session, &client_frame(0x80, b"ends"));
        assert_eq!(session.state(), State::Open);
        assert!(matches!(&done[..], [Message::Text(t)] if t.ends_with("ends")));
    }

    #[test]
    fn a_pong_with_another_payload_is_not_an_answer() {
        let start = Instant::now();
        let mut session = pinging(start);
        session.tick(start + 2 * SECOND);
        receive(&mut session, &client_frame(PONG, b"heartbeat"));
        session.tick(start + 4 * SECOND);
        assert_eq!(session.state(), State::Closing);
    }

    // ----- the bound on what waits to be sent ------------------------------

    #[test]
    fn a_full_queue_gives_up_on_the_peer_and_frees_it() {
        let mut session = server_with(
            Settings {
                max_queued: 10 * (100 + MAX_HEADER_LEN + FRAME_OVERHEAD),
                ..settings()
            },
            Instant::now(),
        );
        let frame = OutgoingFrame::server(OpCode::Binary, &[0; 100]);
        for _ in 0..10 {
            assert_eq!(session.send_shared(&frame), Ok(()));
        }
        assert_eq!(session.send_shared(&frame), Err(NotSent::TooSlow));
        assert_eq!(session.state(), State::Closed);
        assert!(!session.has_outgoing());
        assert!(
            matches!(session.ending(), Some(Ending::GivenUp(why)) if why.starts_with("too slow"))
        );
    }

    #[test]
    fn empty_frames_cost_their_overhead() {
        let mut session = server_with(
            Settings {
                max_queued: 1000 * FRAME_OVERHEAD,
                ..settings()
            },
            Instant::now(),
        );
        let empty = OutgoingFrame::server(OpCode::Binary, &[]);
        let mut queued = 0;
        while session.send_shared(&empty).is_ok() {
            queued += 1;
        }
        assert!(queued < 1000, "{queued} empty frames fit in 1000 overheads");
    }

    #[test]
    fn the_first_reason_is_kept() {
        let mut session = server();
        receive(&mut session, &[TEXT, 0]); // unmasked
        session.give_up("write failed".into());
        session.receive_eof();
        assert_eq!(
            session.ending(),
            Some(&Ending::Failed(ProtocolError::UnmaskedFrame))
        );
    }

    // ----- the client's side ------------------------------------------------

    #[test]
    fn a_client_masks_every_frame_with_a_fresh_key() {
        fn counting_keys() -> [u8; 4] {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_be_bytes()
        }
        let client_settings = Settings {
            mask_key: Some(counting_keys),
            ..settings()
        };
        let mut client = Session::new(
            Role::Client,
            "server",
            client_settings.clone(),
            Instant::now(),
        );
        client.send_message(Message::Text("Hello".into())).unwrap();
        client.send_message(Message::Text("Hello".into())).unwrap();
        let out = client.take_outgoing();
        let mut keys = Vec::new();
        for frame in &out {
            let (header, _) = FrameHeader::parse(frame.head()).unwrap().unwrap();
            let key = header.mask.expect("a client frame is masked");
            let mut payload = frame.body().to_vec();
            apply_mask(&mut payload, key, 0);
            assert_eq!(payload, b"Hello");
            keys.push(key);
        }
        assert_ne!(keys[0], keys[1]);
        // A masked frame from the server fails the connection with 1002.
        receive(&mut client, &client_frame(TEXT, b"masked"));
        assert_eq!(
            client.ending(),
            Some(&Ending::Failed(ProtocolError::MaskedFrame))
        );
        // The server's unmasked frames are read.
        let mut client = Session::new(Role::Client, "server", client_settings, Instant::now());
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            receive(&mut client, &hello),
            vec![Message::Text("Hello".into())]
        );
    }
}
