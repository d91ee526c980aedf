//! One chat room across many wschat processes, over Redis publish/subscribe
//! (`--redis redis://HOST:PORT`).
//!
//! Every process publishes what its clients say to one Redis channel, and
//! delivers what the channel brings to its own clients. Its own clients'
//! messages too: they go to Redis and come back like everyone else's,
//! because Redis puts every message published on a channel in one order and
//! hands them to every subscriber in that order. A process that delivered
//! its own clients' messages at once, before they went round, would show
//! them earlier than the others do, and two rooms would disagree about who
//! said what first. One sender's messages stay in order as well: a client's
//! reader publishes them one after another, through one queue and one
//! connection, and Redis keeps the order of one connection's commands.
//!
//! Two connections, since a connection that has subscribed can only listen:
//!
//! - the publisher: a thread of its own takes messages from a bounded queue
//!   ([`PUBLISH_QUEUE`]) and sends them as `PUBLISH` commands, reading the
//!   replies; nobody else ever waits for Redis.
//! - the subscriber: a thread that reads the channel's pushes, delivers
//!   them, pings Redis when it is quiet, and, when Redis goes away,
//!   reconnects: it is the broker's supervisor.
//!
//! When Redis goes away the process is a room of its own: it delivers its
//! own clients' messages at once, warns once, reconnects with back-off, and
//! rejoins. Nothing is delivered twice: each message carries this process's
//! id and a sequence number, and until it has come back from Redis it is
//! *pending*. When the subscription breaks, the pending messages (which can
//! no longer come back) are delivered here, in order, and no others. What
//! other processes said meanwhile is lost to this one: publish/subscribe
//! keeps no history. That is the honest trade of a broker without storage,
//! and chapter 14 says why it is the right one for a chat.

use crate::connection::{flush_queued, write_all_within};
use crate::frame::OpCode;
use crate::handshake::Parse;
use crate::resp::{Limits, Value, as_message, encode_command, parse_value};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The channel every wschat process publishes on and subscribes to.
pub const CHANNEL: &[u8] = b"wschat";

/// Messages waiting for the publisher thread. A Redis that falls this far
/// behind counts as gone: the process serves its clients alone rather than
/// queue without bound.
pub const PUBLISH_QUEUE: usize = 4096;

/// The most bytes of messages that may be on their way through Redis at
/// once (queued for the publisher, or published and not yet back). Past
/// it, Redis is too slow to keep up with this process's clients, and is
/// given up on as if it had gone: the memory one sender can pin here is
/// bounded, however fast it sends and however slow Redis is.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// How long a write to Redis, or an answer from it, may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the subscription may be silent before it is pinged; a ping
/// unanswered for as long again means Redis is gone.
pub const QUIET_PING: Duration = Duration::from_secs(5);

/// The waits between reconnection attempts: doubling, up to the last.
pub const BACK_OFF: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Where the messages go: the chat's delivery to this process's clients.
/// It queues a frame for each; the broker sends what it queued
/// ([`flush_queued`]) after each batch.
pub type Deliver = Box<dyn Fn(OpCode, &[u8]) + Send + Sync>;

/// Why Redis cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError(pub String);

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for BrokerError {}

/// `redis://HOST:PORT` (the port 6379 if left out) into `HOST:PORT`.
pub fn parse_redis_url(url: &str) -> Result<String, BrokerError> {
    let wrong = || BrokerError(format!("{url:?} is not a redis://HOST:PORT URL"));
    let rest = url.strip_prefix("redis://").ok_or_else(wrong)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return Err(wrong());
    }
    // `host:port`, `host`, `[v6]:port` or `[v6]`.
    let port = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').ok_or_else(wrong)?.1.strip_prefix(':'),
        None => authority.split_once(':').map(|(_, port)| port),
    };
    match port {
        None => Ok(format!("{authority}:6379")),
        Some(port) if port.parse::<u16>().is_ok() && !authority.starts_with(':') => {
            Ok(authority.to_string())
        }
        Some(_) => Err(wrong()),
    }
}

/// One message on its way through Redis: who published it, its number,
/// and the chat frame's opcode and payload.
///
/// On the wire (the payload of `PUBLISH`): `wschat <origin> <seq> <t|b>\n`
/// and then the payload's bytes, untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The publishing process's id.
    pub origin: String,
    /// Its sequence number in that process.
    pub seq: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// The chat line, or the binary message.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// The bytes published.
    pub fn to_bytes(&self) -> Vec<u8> {
        let kind = if self.opcode == OpCode::Text {
            't'
        } else {
            'b'
        };
        let mut out = format!("wschat {} {} {kind}\n", self.origin, self.seq).into_bytes();
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads what another process published; `None` if it is not an
    /// envelope (someone else publishing on the channel).
    pub fn parse(bytes: &[u8]) -> Option<Envelope> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..newline]).ok()?;
        let mut fields = head.split(' ');
        let (Some("wschat"), Some(origin), Some(seq), Some(kind), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return None;
        };
        let opcode = match kind {
            "t" => OpCode::Text,
            "b" => OpCode::Binary,
            _ => return None,
        };
        let payload = bytes[newline + 1..].to_vec();
        if opcode == OpCode::Text && std::str::from_utf8(&payload).is_err() {
            return None; // a text frame must be UTF-8 (§5.6)
        }
        Some(Envelope {
            origin: origin.to_string(),
            seq: seq.parse().ok()?,
            opcode,
            payload,
        })
    }
}

/// A message for the publisher thread, tagged with the connection it was
/// meant for: after a reconnection, the old connection's messages have
/// been delivered locally already and must not be published again.
struct Outgoing {
    epoch: u64,
    command: Vec<u8>,
}

/// What the reader threads and the broker's two threads share.
struct State {
    /// Whether the room is shared through Redis right now.
    shared: bool,
    /// Counts connections to Redis: a new one each time it comes back.
    epoch: u64,
    next_seq: u64,
    /// Published, not yet back from Redis, in order.
    pending: BTreeMap<u64, (OpCode, Vec<u8>)>,
    /// The payload bytes in `pending`.
    pending_bytes: usize,
    /// Why we shut the connections down ourselves, if we did: the
    /// subscriber thread then sees them closed, and says this instead.
    given_up_because: Option<String>,
    /// The two sockets, kept to shut them down from either thread.
    publisher: Option<TcpStream>,
    subscriber: Option<TcpStream>,
}

/// The link between this process's chat and Redis.
pub struct Broker {
    /// `HOST:PORT` of Redis, for connecting and for the log.
    addr: String,
    /// This process's id in envelopes.
    origin: String,
    limits: Limits,
    deliver: Deliver,
    state: Mutex<State>,
    queue: SyncSender<Outgoing>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Broker({})", self.addr)
    }
}

impl Broker {
    /// Connects to Redis at `url`, subscribes, and starts the two threads.
    /// `max_message` bounds what a push may hold; `deliver` hands a frame
    /// to this process's clients. Fails if Redis cannot be used now.
    pub fn start(
        url: &str,
        max_message: usize,
        deliver: Deliver,
    ) -> Result<Arc<Broker>, BrokerError> {
        let addr = parse_redis_url(url)?;
        let limits = Limits {
            // The chat line adds a name to the message, the envelope a line.
            max_bulk: max_message + 1024,
            max_array: 3,
        };
        let (subscriber, leftover) = subscribe(&addr, &limits)
            .map_err(|e| BrokerError(format!("cannot subscribe at redis://{addr}: {e}")))?;
        let publisher = connect_publisher(&addr, &limits)
            .map_err(|e| BrokerError(format!("cannot publish at redis://{addr}: {e}")))?;
        let (queue, outgoing) = sync_channel(PUBLISH_QUEUE);
        let origin = process_id(&subscriber);
        let broker = Arc::new(Broker {
            addr,
            origin,
            limits,
            deliver,
            state: Mutex::new(State {
                shared: true,
                epoch: 0,
                next_seq: 0,
                pending: BTreeMap::new(),
                pending_bytes: 0,
                given_up_because: None,
                publisher: publisher.try_clone().ok(),
                subscriber: subscriber.try_clone().ok(),
            }),
            queue,
        });
        let publishing = Arc::clone(&broker);
        thread::Builder::new()
            .name("redis-publish".into())
            .spawn(move || publishing.publish_loop(outgoing, publisher, 0))
            .map_err(|e| BrokerError(format!("cannot start a thread: {e}")))?;
        let subscribed = Arc::clone(&broker);
        thread::Builder::new()
            .name("redis-subscribe".into())
            .spawn(move || subscribed.subscribe_loop(subscriber, leftover))
            .map_err(|e| BrokerError(format!("cannot start a thread: {e}")))?;
        log::info!(
            "sharing the room through redis://{} (channel \"wschat\")",
            broker.addr
        );
        Ok(broker)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is complete before the lock is let go.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A message from one of this process's clients, for the whole room.
    ///
    /// Never waits for Redis: with Redis there it is queued for the
    /// publisher thread; without, delivered here at once. Either way under
    /// the state lock, so that one sender's messages keep their order
    /// across a change between the two.
    pub fn publish(&self, opcode: OpCode, payload: Vec<u8>) {
        let mut state = self.state();
        if !state.shared {
            (self.deliver)(opcode, &payload);
            return;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let envelope = Envelope {
            origin: self.origin.clone(),
            seq,
            opcode,
            payload,
        };
        let command = encode_command(&[b"PUBLISH", CHANNEL, &envelope.to_bytes()]);
        let epoch = state.epoch;
        state.pending_bytes += envelope.payload.len();
        state.pending.insert(seq, (opcode, envelope.payload));
        if state.pending_bytes > MAX_PENDING_BYTES {
            // Still pending, so delivered here when the subscriber thread
            // takes over: once, in order.
            shut_down(&mut state, "too much is waiting for Redis: it is too slow");
            return;
        }
        match self.queue.try_send(Outgoing { epoch, command }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Redis is too slow: give it up, as it would give us up.
                // The subscriber thread then delivers what is pending.
                shut_down(&mut state, "the publish queue is full: Redis is too slow");
            }
            Err(TrySendError::Disconnected(_)) => {
                shut_down(&mut state, "the publisher thread has ended");
            }
        }
    }

    /// The publisher thread: `PUBLISH` commands out, their replies in.
    fn publish_loop(&self, outgoing: Receiver<Outgoing>, mut socket: TcpStream, mut epoch: u64) {
        let mut replies = Vec::new();
        while let Ok(first) = outgoing.recv() {
            // Whatever else is waiting goes out in the same write.
            let batch: Vec<Outgoing> = std::iter::once(first).chain(outgoing.try_iter()).collect();
            // A reconnection since: take the new connection.
            {
                let state = self.state();
                if state.epoch != epoch {
                    match state.publisher.as_ref().and_then(|s| s.try_clone().ok()) {
                        Some(new) => {
                            socket = new;
                            epoch = state.epoch;
                            replies.clear();
                        }
                        None => continue,
                    }
                }
            }
            let commands: Vec<u8> = batch
                .iter()
                .filter(|item| item.epoch == epoch) // older ones went out locally
                .flat_map(|item| item.command.iter().copied())
                .collect();
            let count = batch.iter().filter(|item| item.epoch == epoch).count();
            if count == 0 {
                continue;
            }
            let sent = write_all_within(&socket, &mut [IoSlice::new(&commands)], REDIS_TIMEOUT)
                .and_then(|()| read_replies(&mut socket, &mut replies, count, &self.limits));
            if let Err(e) = sent {
                let mut state = self.state();
                if state.epoch == epoch {
                    shut_down(&mut state, &format!("publishing failed: {e}"));
                }
            }
        }
    }

    /// The subscriber thread, for the life of the process: deliver what the
    /// channel brings; when the subscription breaks, serve alone and
    /// reconnect.
    fn subscribe_loop(&self, mut subscriber: TcpStream, mut leftover: Vec<u8>) {
        loop {
            let why = self.listen(&mut subscriber, leftover);
            let why = self.state().given_up_because.take().unwrap_or(why);
            let stranded = self.go_alone();
            log::warn!(
                "redis://{} lost ({why}): this process's clients chat as a room of their own \
                 until it is back{}; reconnecting",
                self.addr,
                if stranded > 0 {
                    format!(" ({stranded} messages that had not come back were delivered here)")
                } else {
                    String::new()
                }
            );
            (subscriber, leftover) = self.reconnect();
        }
    }

    /// Reads the subscription until it breaks; returns why it broke.
    fn listen(&self, subscriber: &mut TcpStream, mut buffer: Vec<u8>) -> String {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut pinged = false;
        loop {
            // Deliver every whole push in the buffer, then send them to
            // the clients together: one system call per client for all the
            // messages of one read, as a client's reader does.
            let mut start = 0;
            let broke = loop {
                match parse_value(&buffer[start..], &self.limits) {
                    Ok(Parse::Complete(value, used)) => {
                        start += used;
                        pinged = false;
                        self.receive(&value);
                    }
                    Ok(Parse::Partial) => break None,
                    Err(e) => break Some(format!("a bad reply: {e}")),
                }
            };
            buffer.drain(..start);
            flush_queued();
            if let Some(why) = broke {
                return why;
            }
            if subscriber.set_read_timeout(Some(QUIET_PING)).is_err() {
                return "the socket failed".into();
            }
            match subscriber.read(&mut chunk) {
                Ok(0) => return "Redis closed the connection".into(),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) && !pinged => {
                    // Quiet: is Redis still there? (PING is allowed while
                    // subscribed.)
                    pinged = true;
                    if let Err(e) = subscriber.write_all(&encode_command(&[b"PING"])) {
                        return format!("ping failed: {e}");
                    }
                }
                Err(e) if is_timeout(&e) => return "no answer to a ping".into(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.to_string(),
            }
        }
    }

    /// One value from the subscription: a message is delivered (and, if it
    /// is one of ours, is no longer pending); anything else is a reply
    /// (to our ping) and needs nothing.
    fn receive(&self, value: &Value) {
        let Some((_, payload)) = as_message(value) else {
            return;
        };
        let Some(envelope) = Envelope::parse(payload) else {
            log::debug!("redis://{}: not a wschat message; ignored", self.addr);
            return;
        };
        if envelope.origin == self.origin {
            let mut state = self.state();
            if let Some((_, payload)) = state.pending.remove(&envelope.seq) {
                state.pending_bytes -= payload.len();
            }
        }
        (self.deliver)(envelope.opcode, &envelope.payload);
    }

    /// The subscription broke: from now on this process delivers its own
    /// messages, starting with the pending ones, which can no longer come
    /// back. Returns how many there were.
    fn go_alone(&self) -> usize {
        let mut state = self.state();
        state.shared = false;
        state.epoch += 1;
        shut_down(&mut state, "");
        state.publisher = None;
        state.subscriber = None;
        let pending = std::mem::take(&mut state.pending);
        state.pending_bytes = 0;
        for (opcode, payload) in pending.values() {
            (self.deliver)(*opcode, payload);
        }
        flush_queued();
        pending.len()
    }

    /// Tries again and again, waiting longer each time, until Redis takes
    /// both connections; then the room is shared again.
    fn reconnect(&self) -> (TcpStream, Vec<u8>) {
        let mut attempt = 0;
        loop {
            thread::sleep(BACK_OFF[attempt.min(BACK_OFF.len() - 1)]);
            attempt += 1;
            let connected =
                subscribe(&self.addr, &self.limits).and_then(|(subscriber, leftover)| {
                    let publisher = connect_publisher(&self.addr, &self.limits)?;
                    Ok((subscriber, leftover, publisher))
                });
            match connected {
                Ok((subscriber, leftover, publisher)) => {
                    let mut state = self.state();
                    state.shared = true;
                    state.publisher = Some(publisher);
                    state.subscriber = subscriber.try_clone().ok();
                    drop(state);
                    log::info!(
                        "redis://{} is back (attempt {attempt}): the room is shared again",
                        self.addr
                    );
                    return (subscriber, leftover);
                }
                Err(e) => log::debug!("redis://{}: attempt {attempt}: {e}", self.addr),
            }
        }
    }
}

/// Shuts both sockets down, so that whichever thread waits on them wakes
/// up with an error; the subscriber thread then takes over, and logs `why`
/// (the first reason given).
fn shut_down(state: &mut State, why: &str) {
    if !why.is_empty() && state.given_up_because.is_none() {
        state.given_up_because = Some(why.to_string());
    }
    for socket in [&state.publisher, &state.subscriber].into_iter().flatten() {
        let _ = socket.shutdown(Shutdown::Both);
    }
}

/// A connection to Redis with both timeouts set.
fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for resolved in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, REDIS_TIMEOUT) {
            Ok(socket) => {
                socket.set_read_timeout(Some(REDIS_TIMEOUT))?;
                socket.set_write_timeout(Some(REDIS_TIMEOUT))?;
                socket.set_nodelay(true)?;
                return Ok(socket);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The subscriber connection: `SUBSCRIBE wschat`, and Redis's confirmation.
/// Returns the socket and any bytes that came after the confirmation.
fn subscribe(addr: &str, limits: &Limits) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut socket = connect(addr)?;
    socket.write_all(&encode_command(&[b"SUBSCRIBE", CHANNEL]))?;
    let mut buffer = Vec::new();
    let value = read_value(&mut socket, &mut buffer, limits)?;
    let Value::Array(Some(items)) = &value else {
        return Err(unexpected(&value));
    };
    match items.first() {
        Some(Value::Bulk(Some(kind))) if kind == b"subscribe" => Ok((socket, buffer)),
        _ => Err(unexpected(&value)),
    }
}

/// The publisher connection, checked with `PING`.
fn connect_publisher(addr: &str, limits: &Limits) -> io::Result<TcpStream> {
    let mut socket = connect(addr)?;
    socket.write_all(&encode_command(&[b"PING"]))?;
    let mut buffer = Vec::new();
    match read_value(&mut socket, &mut buffer, limits)? {
        Value::Simple(pong) if pong == "PONG" => Ok(socket),
        other => Err(unexpected(&other)),
    }
}

/// Reads `count` replies to `PUBLISH` (each the number of subscribers it
/// reached); an error reply is a failure.
fn read_replies(
    socket: &mut TcpStream,
    buffer: &mut Vec<u8>,
    count: usize,
    limits: &Limits,
) -> io::Result<()> {
    for _ in 0..count {
        match read_value(socket, buffer, limits)? {
            Value::Integer(_) => {}
            other => return Err(unexpected(&other)),
        }
    }
    Ok(())
}

/// Reads one value, keeping what follows it in `buffer`.
fn read_value(socket: &mut TcpStream, buffer: &mut Vec<u8>, limits: &Limits) -> io::Result<Value> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse_value(buffer, limits) {
            Ok(Parse::Complete(value, used)) => {
                buffer.drain(..used);
                return Ok(value);
            }
            Ok(Parse::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        match socket.read(&mut chunk)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ));
            }
            n => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn unexpected(value: &Value) -> io::Error {
    let text = match value {
        Value::Error(message) => format!("Redis answered: {message}"),
        other => format!("unexpected answer {other:?}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, text)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// An id for this process in envelopes: unique among the processes that
/// share a Redis, which is all it needs to be (it is not a secret). The
/// subscriber connection's own address is unique among live connections
/// to that Redis from one host; the process id and the start time tell
/// hosts apart.
fn process_id(subscriber: &TcpStream) -> String {
    let local = subscriber
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{local}-{}-{started:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_strangers_are_refused() {
        let envelope = Envelope {
            origin: "127.0.0.1:5000-42-abc".into(),
            seq: 7,
            opcode: OpCode::Binary,
            payload: vec![0, b'\n', 255],
        };
        let bytes = envelope.to_bytes();
        assert_eq!(&bytes[..35], b"wschat 127.0.0.1:5000-42-abc 7 b\n\0\n");
        assert_eq!(Envelope::parse(&bytes), Some(envelope));
        for stranger in [
            &b"hello"[..],
            b"wschat x 1 t",
            b"wschat x y t\nhi",
            b"wschat x 1 q\nhi",
            b"wschat x 1 t\n\xff",
            b"other x 1 t\nhi",
        ] {
            assert_eq!(Envelope::parse(stranger), None, "{stranger:?}");
        }
    }

    #[test]
    fn redis_urls() {
        assert_eq!(
            parse_redis_url("redis://127.0.0.1:6380").unwrap(),
            "127.0.0.1:6380"
        );
        assert_eq!(
            parse_redis_url("redis://localhost/").unwrap(),
            "localhost:6379"
        );
        for wrong in [
            "127.0.0.1:6379",
            "http://h:1",
            "redis://",
            "redis://h:99999",
            "redis://user@h:1",
            "redis://h:1/2",
            "redis://:1",
        ] {
            assert!(parse_redis_url(wrong).is_err(), "{wrong}");
        }
    }
}
