//! The TCP accept loop, one OS thread per client, and the graceful stop.
//!
//! [`serve`] accepts connections. One that can take one of the
//! `--max-clients` slots gets a thread of its own, named after the client
//! (`ID54321`); one over the limit gets 503 at once, without a thread
//! (admission by reservation). The client's thread reads the opening request
//! ([`crate::handshake`]). A plain HTTP request gets the chat page (or 400,
//! 404 or 405); an upgrade request gets a [`Connection`], a place in the room
//! ([`crate::chat`]), `101 Switching Protocols`, and the reader loop
//! ([`connection::run`]) until the client leaves.
//!
//! [`Server::stop`] is the graceful stop of SIGINT and SIGTERM: no new
//! connections, a close frame with 1001 (Going Away) to every client, and a
//! short wait for their replies.

use crate::chat::{Chat, client_name, max_queued};
use crate::config::Config;
use crate::connection::{self, Connection, RequestError, read_request, send_http};
use crate::error::code;
use crate::frame::Role;
use crate::handshake::{self, Refusal, Request, error_response, http_response};
use crate::message::Budget;
use crate::session::{Session, Settings};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Stack size of a client thread. The default 2 MiB is address space wasted
/// on a thread that only parses frames; 128 KiB leaves plenty of headroom.
/// (Public for the benchmark, whose reference server uses the same.)
pub const CLIENT_STACK_SIZE: usize = 128 * 1024;

/// How long a graceful stop waits for clients to answer its close frames.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The chat page, built into the binary so that it runs from anywhere.
pub const PAGE: &str = include_str!("../www/index.html");

/// What the server shares between its threads.
#[derive(Debug)]
pub struct Server {
    /// The options it was started with.
    pub config: Config,
    /// The room: every upgraded client.
    pub chat: Chat,
    /// The memory all clients' unfinished messages share (`--max-buffered`).
    pub budget: Arc<Budget>,
    /// Hands connections over the limit to the refuser thread.
    refusals: Option<mpsc::SyncSender<TcpStream>>,
    /// Connections open right now, handshaking or upgraded.
    connections: AtomicUsize,
    /// Set by [`Server::stop`]: accept no more.
    stopping: AtomicBool,
}

impl Server {
    /// A server with no connections yet.
    pub fn new(config: Config) -> Server {
        Server {
            chat: Chat::new(config.echo),
            refusals: start_refuser(),
            budget: Arc::new(Budget::new(config.max_buffered)),
            config,
            connections: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// How many connections are open right now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many clients are in the room.
    pub fn client_count(&self) -> usize {
        self.chat.client_count()
    }

    /// Stops gracefully: no new connections, close 1001 (Going Away) to
    /// every client, then waits at most [`STOP_TIMEOUT`] for them to leave.
    /// `listening` is the address [`serve`] accepts on: a connection to it
    /// wakes the accept loop so that it sees the stop.
    pub fn stop(&self, listening: SocketAddr) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&reachable(listening), Duration::from_secs(1));
        let clients = self.chat.clients();
        log::info!("stopping: sending close 1001 to {} clients", clients.len());
        for client in &clients {
            client.close(code::GOING_AWAY, "server stopping");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.client_count() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        match self.client_count() {
            0 => log::info!("stopped: every client closed"),
            n => log::info!("stopped: {n} clients did not close within {STOP_TIMEOUT:?}"),
        }
    }
}

/// An address a connection can reach `addr` at: a server listening on every
/// interface (`0.0.0.0`) is reached through the loopback interface.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Binds `config.listen` and serves on a background thread; returns the
/// address bound (useful with port 0) and the shared state. For tests and
/// for embedding; `main` calls [`serve`] itself.
pub fn start(config: Config) -> io::Result<(SocketAddr, Arc<Server>)> {
    let listener = TcpListener::bind(config.listen)?;
    let addr = listener.local_addr()?;
    let server = Arc::new(Server::new(config));
    let shared = Arc::clone(&server);
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || serve(listener, shared))?;
    Ok((addr, server))
}

/// Descriptors the server needs besides one per connection: the
/// listener, standard streams, and connections waiting to be refused.
pub const SPARE_DESCRIPTORS: usize = 128;

/// Connections over `--max-clients` waiting for their 503: the refuser
/// spends at most [`REFUSAL_WAIT`] on each, so the last waits at most
/// about a third of a second.
const REFUSAL_QUEUE: usize = 32;

/// How long a refusal waits for the request it answers. Closing a socket
/// with unread bytes makes the kernel send a reset, which can destroy the
/// 503 before the client reads it; clients send their request as soon as
/// they connect.
const REFUSAL_WAIT: Duration = Duration::from_millis(10);

/// Accepts connections until the server stops. A connection is served only
/// if it can take one of the `--max-clients` slots (admission by
/// reservation: of a burst of N + k, exactly N are served); one over the
/// limit is answered 503 by the refuser thread at once, so that threads and
/// descriptors stay within the limit plus a small constant.
pub fn serve(listener: TcpListener, server: Arc<Server>) {
    let mut failures = AcceptFailures::default();
    for stream in listener.incoming() {
        if server.stopping.load(Ordering::SeqCst) {
            break; // dropping the listener closes the port
        }
        match stream {
            Ok(stream) => match ConnectionSlot::reserve(&server) {
                Some(slot) => spawn_client(stream, slot, &server),
                None => refuse_over_limit(stream, &server),
            },
            Err(e) => failures.note(&e),
        }
    }
}

/// Answers a connection over `--max-clients` with 503, without a thread of
/// its own. Its request has usually arrived already: then it is read and
/// answered at once. If not, the refuser thread waits a little for it,
/// unless so many wait already that this is a flood.
fn refuse_over_limit(stream: TcpStream, server: &Server) {
    if let Ok(addr) = stream.peer_addr() {
        let refusal = Refusal::TooManyClients;
        log::info!("{}: handshake refused: 503 {refusal}", client_name(addr));
    }
    if discard_what_arrived(&stream) > 0 {
        return answer_503(&stream);
    }
    match &server.refusals {
        Some(refusals) => {
            if let Err(mpsc::TrySendError::Full(stream)) = refusals.try_send(stream) {
                answer_503(&stream);
            }
        }
        None => answer_503(&stream),
    }
}

/// The thread that answers connections over the limit whose request had
/// not arrived yet, one at a time, so that the accept loop never waits.
fn start_refuser() -> Option<mpsc::SyncSender<TcpStream>> {
    let (refusals, queue) = mpsc::sync_channel::<TcpStream>(REFUSAL_QUEUE);
    let started = thread::Builder::new()
        .name("refuse".into())
        .stack_size(CLIENT_STACK_SIZE)
        .spawn(move || {
            for stream in queue {
                refuse_without_thread(&stream);
            }
        });
    match started {
        Ok(_) => Some(refusals),
        Err(e) => {
            log::warn!("no thread for refusals ({e}): they are answered without waiting");
            None
        }
    }
}

/// Failed `accept` calls: logged at most once a second, with a count.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
    logged_at: Option<Instant>,
}

impl AcceptFailures {
    fn note(&mut self, e: &io::Error) {
        self.count += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            log::warn!("accept failed {} times in the last second: {e}", self.count);
            self.count = 0;
            self.logged_at = Some(Instant::now());
        }
        // Out of descriptors (EMFILE, ENFILE): they come back only as
        // connections end, so wait a little. Anything else is a connection
        // reset before it was taken.
        let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24));
        thread::sleep(Duration::from_millis(if out_of_descriptors {
            50
        } else {
            1
        }));
    }
}

/// Starts the thread that serves one client. If the thread cannot be
/// created, the connection is refused with 503 and the server goes on.
fn spawn_client(stream: TcpStream, slot: ConnectionSlot, server: &Arc<Server>) {
    let Ok(addr) = stream.peer_addr() else {
        return; // Reset before we got to it: nothing to serve.
    };
    let name = client_name(addr);
    let shared = Arc::clone(server);
    // The thread is started first and handed the stream once it exists, so
    // that if it cannot be started we still hold the stream and can answer.
    let (hand_over, receive) = mpsc::sync_channel::<TcpStream>(1);
    let spawned = thread::Builder::new()
        .name(name.clone())
        .stack_size(CLIENT_STACK_SIZE)
        .spawn(move || {
            let _slot = slot;
            if let Ok(stream) = receive.recv() {
                handle_client(stream, addr, name, &shared);
            }
        });
    match spawned {
        Ok(_) => {
            let _ = hand_over.send(stream);
        }
        Err(e) => {
            log::warn!(
                "{}: no thread for a new client, refused with 503: {e}",
                client_name(addr)
            );
            refuse_without_thread(&stream);
        }
    }
}

/// Answers 503 without a thread of the connection's own.
///
/// The request is read first (waiting at most [`REFUSAL_WAIT`] for it),
/// because closing a socket with unread data makes the kernel send a
/// reset, which can destroy the response before the client reads it.
fn refuse_without_thread(stream: &TcpStream) {
    let mut sink = [0u8; 1];
    let _ = stream.set_read_timeout(Some(REFUSAL_WAIT));
    let _ = stream.peek(&mut sink);
    discard_what_arrived(stream);
    answer_503(stream);
}

/// Reads and throws away what has arrived on `stream`, without waiting;
/// returns how many bytes that was.
fn discard_what_arrived(mut stream: &TcpStream) -> usize {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    if stream.set_nonblocking(true).is_ok() {
        while let Ok(n @ 1..) = stream.read(&mut sink) {
            total += n;
        }
        let _ = stream.set_nonblocking(false);
    }
    total
}

/// Writes the 503 (it fits in any socket buffer) and closes our side.
fn answer_503(mut stream: &TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(&error_response(&Refusal::TooManyClients));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// One of the `--max-clients` slots, held for as long as its connection
/// lives, whichever way its thread ends.
struct ConnectionSlot(Arc<Server>);

impl ConnectionSlot {
    /// Takes a slot if one is free: counted and checked in one atomic step,
    /// so that two connections can never both take the last one.
    fn reserve(server: &Arc<Server>) -> Option<ConnectionSlot> {
        let max = server.config.max_clients;
        server
            .connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot(Arc::clone(server)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything one client thread does, from the first byte to the last.
fn handle_client(stream: TcpStream, addr: SocketAddr, name: String, server: &Server) {
    let config = &server.config;
    let _ = stream.set_nodelay(true);
    let (request, pending) = match read_request(&stream, config.handshake_timeout) {
        Ok(read) => read,
        Err(RequestError::Invalid(error)) => return refuse(&stream, &name, &error),
        // RFC 6455 sets no time limit; wschat does (§10.4 asks servers to
        // limit what one client can hold), and a 408 tells a human at a
        // terminal what happened.
        // Browsers open spare connections they may never use: not news.
        Err(e @ RequestError::Closed(0)) => return log::debug!("{name}: {e}"),
        Err(e @ RequestError::TimedOut(0)) => {
            log::debug!("{name}: {e}");
            return send_quietly(&stream, &Refusal::TimedOut);
        }
        Err(RequestError::TimedOut(_)) => return refuse(&stream, &name, &Refusal::TimedOut),
        Err(e) => return log::info!("{name}: handshake not completed: {e}"),
    };
    log::debug!(
        "{name}: request {} {} {:?}",
        request.method,
        request.path,
        request.headers
    );
    if !request.wants_upgrade() {
        return serve_http(&stream, &name, &request);
    }
    if server.stopping.load(Ordering::SeqCst) {
        return refuse(&stream, &name, &Refusal::Stopping);
    }
    let response = match handshake::validate(&request, &config.allow_origins) {
        Ok(response) => response.to_bytes(),
        Err(error) => return refuse(&stream, &name, &error),
    };
    log::debug!("{name}: response {:?}", String::from_utf8_lossy(&response));
    let settings = Settings {
        max_message: config.max_message,
        max_queued: max_queued(config),
        ping_interval: config.ping_interval,
        mask_key: None,
        budget: Some(Arc::clone(&server.budget)),
    };
    let session = Session::new(Role::Server, &name, settings, Instant::now());
    let connection = Arc::new(Connection::new(
        name.clone(),
        stream,
        session,
        config.write_timeout,
    ));
    // The client joins the room before its 101 is written, and no frame
    // goes out before the 101 (`Connection::send_handshake_response`): a
    // client receives every message broadcast after its 101 reached it.
    let member = server.chat.join(addr, Arc::clone(&connection));
    if let Err(e) = connection.send_handshake_response(&response) {
        return log::info!("{name}: could not send the handshake response: {e}");
    }
    let count = server.client_count();
    let plural = if count == 1 { "" } else { "s" };
    log::info!("{name} connected ({count} client{plural})");
    let ending = connection::run(&connection, &pending, |message| {
        server.chat.on_message(&connection, message)
    });
    // Leave the room at once, then close TCP the polite way, which can
    // take a moment (§7.1.1).
    drop(member);
    log::info!("{name} disconnected: {ending}");
    connection::finish(&connection);
}

/// Plain HTTP on the same port: `GET /` is the chat page, and `HEAD /` its
/// status and headers (RFC 9110 §9.1: a general-purpose server MUST support
/// both).
fn serve_http(stream: &TcpStream, name: &str, request: &Request) {
    let head_only = request.method == "HEAD";
    let response = match page(request) {
        Ok(()) => {
            log::info!("{name}: {} / (the chat page)", request.method);
            http_response((200, "OK"), "text/html; charset=utf-8", "", PAGE.as_bytes())
        }
        Err(refusal) => {
            log::info!("{name}: refused: {} {refusal}", refusal.status().0);
            error_response(&refusal)
        }
    };
    let _ = send_http(stream, &without_body(response, head_only));
}

/// Whether `request` asks for the page: a `Host` by the rules, `GET` or
/// `HEAD`, and the path `/` (with any query).
fn page(request: &Request) -> Result<(), Refusal> {
    request.check_host()?;
    request.check_content_length()?;
    if request.method != "GET" && request.method != "HEAD" {
        return Err(Refusal::MethodNotAllowed(request.method.clone()));
    }
    let path = request.path.split('?').next().unwrap_or("");
    if path != "/" {
        return Err(Refusal::NotFound(request.path.clone()));
    }
    Ok(())
}

/// A response to `HEAD` is the response to `GET` without its body
/// (RFC 9110 §9.3.2); `Content-Length` still says how long it would be.
fn without_body(mut response: Vec<u8>, head_only: bool) -> Vec<u8> {
    if head_only && let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
    response
}

/// Answers with `refusal`'s status, without a log line.
fn send_quietly(stream: &TcpStream, refusal: &Refusal) {
    let _ = send_http(stream, &error_response(refusal));
}

/// Answers a refused handshake with its HTTP status and closes.
fn refuse(stream: &TcpStream, name: &str, error: &Refusal) {
    log::info!("{name}: handshake refused: {} {error}", error.status().0);
    let _ = send_http(stream, &error_response(error));
}
