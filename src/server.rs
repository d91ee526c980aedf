//! The TCP accept loop: one OS thread per client.
//!
//! [`serve`] accepts connections and hands each to its own thread, named
//! after the client (`ID54321`). That thread reads the opening request
//! ([`crate::handshake`]). A plain HTTP request gets the chat page (or 404
//! or 405); an upgrade request gets `101 Switching Protocols`, a place in
//! the client table ([`crate::room`]), and the connection's reading loop
//! ([`crate::connection::run`]) until the client leaves.

use crate::config::Config;
use crate::connection::{Peer, RequestError, read_request, run, send_http};
use crate::handshake::{self, HandshakeError, Request, error_response, http_response};
use crate::message::Receiver;
use crate::room::{ClientTable, client_count, join, new_table, notify};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

/// Stack size of a client thread. The default 2 MiB is address space wasted
/// on a thread that only parses frames; 128 KiB leaves plenty of headroom.
pub const CLIENT_STACK_SIZE: usize = 128 * 1024;

/// The chat page, built into the binary so that it runs from anywhere.
pub const PAGE: &str = include_str!("../www/index.html");

/// What the server shares between its threads.
#[derive(Debug)]
pub struct Server {
    /// The options it was started with.
    pub config: Config,
    /// Every upgraded client.
    pub clients: ClientTable,
    /// Connections open right now, handshaking or upgraded.
    connections: AtomicUsize,
}

impl Server {
    /// A server with no connections yet.
    pub fn new(config: Config) -> Server {
        Server {
            config,
            clients: new_table(),
            connections: AtomicUsize::new(0),
        }
    }

    /// How many connections are open right now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many clients are in the client table.
    pub fn client_count(&self) -> usize {
        client_count(&self.clients)
    }
}

/// Binds `config.listen` and serves on a background thread; returns the
/// address bound (useful with port 0) and the shared state. For tests and
/// for embedding; `main` calls [`serve`] directly.
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

/// Accepts connections forever, one thread each.
pub fn serve(listener: TcpListener, server: Arc<Server>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => spawn_client(stream, &server),
            Err(e) => {
                // Out of file descriptors, or a connection reset before we
                // took it: log, pause briefly so a full table can drain, go on.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Starts the thread that serves one client. If the thread cannot be
/// created, the connection is refused with 503 and the server goes on.
fn spawn_client(stream: TcpStream, server: &Arc<Server>) {
    let Ok(addr) = stream.peer_addr() else {
        return; // Reset before we got to it: nothing to serve.
    };
    // The contract names a client after its port: 127.0.0.1:54321 is ID54321.
    let id = format!("ID{}", addr.port());
    let shared = Arc::clone(server);
    let slot = ConnectionSlot::take(Arc::clone(server));
    // The thread is started first and handed the stream once it exists, so
    // that if it cannot be started we still hold the stream and can answer.
    let (hand_over, receive) = mpsc::sync_channel::<TcpStream>(1);
    let spawned = thread::Builder::new()
        .name(id.clone())
        .stack_size(CLIENT_STACK_SIZE)
        .spawn(move || {
            let _slot = slot;
            if let Ok(stream) = receive.recv() {
                handle_client(stream, addr, id, &shared);
            }
        });
    match spawned {
        Ok(_) => {
            let _ = hand_over.send(stream);
        }
        Err(e) => {
            log::warn!(
                "ID{}: no thread for a new client, refused with 503: {e}",
                addr.port()
            );
            refuse_without_thread(&stream);
        }
    }
}

/// Answers 503 from the accept loop itself, which has no thread to spare.
///
/// The request is read first (waiting at most 50 ms for it), because
/// closing a socket with unread data makes the kernel send a reset, which
/// can destroy the response before the client reads it.
fn refuse_without_thread(mut stream: &TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    if matches!(stream.read(&mut sink), Ok(n) if n > 0) && stream.set_nonblocking(true).is_ok() {
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        let _ = stream.set_nonblocking(false);
    }
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(&error_response(&HandshakeError::TooManyClients));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Counts a connection for as long as it lives, whichever way its thread ends.
struct ConnectionSlot(Arc<Server>);

impl ConnectionSlot {
    fn take(server: Arc<Server>) -> ConnectionSlot {
        server.connections.fetch_add(1, Ordering::SeqCst);
        ConnectionSlot(server)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything one client thread does, from the first byte to the last.
fn handle_client(stream: TcpStream, addr: SocketAddr, id: String, server: &Server) {
    let config = &server.config;
    let _ = stream.set_nodelay(true);
    let (request, pending) = match read_request(&stream, config.handshake_timeout) {
        Ok(read) => read,
        Err(RequestError::Invalid(error)) => return refuse(&stream, &id, &error),
        // RFC 6455 sets no time limit; wschat does (§10.4 asks servers to
        // limit what one client can hold), and a 408 tells a human at a
        // terminal what happened.
        Err(RequestError::TimedOut) => return refuse(&stream, &id, &HandshakeError::TimedOut),
        // Browsers open spare connections they may never use: not news.
        Err(e @ RequestError::Closed(0)) => return log::debug!("{id}: {e}"),
        Err(e) => return log::info!("{id}: handshake not completed: {e}"),
    };
    log::debug!(
        "{id}: request {} {} {:?}",
        request.method,
        request.path,
        request.headers
    );
    if !request.wants_upgrade() {
        return serve_http(&stream, &id, &request);
    }
    if server.connections() > config.max_clients {
        return refuse(&stream, &id, &HandshakeError::TooManyClients);
    }
    let response = match handshake::validate(&request, &config.allow_origins) {
        Ok(response) => response,
        Err(error) => return refuse(&stream, &id, &error),
    };
    let bytes = response.to_bytes();
    log::debug!("{id}: response {:?}", String::from_utf8_lossy(&bytes));
    if let Err(e) = (&stream).write_all(&bytes) {
        return log::info!("{id}: could not send the handshake response: {e}");
    }
    // The outbox may hold sixteen of the largest messages (at least 16 MiB)
    // before the client counts as too slow: enough for a reader that keeps
    // up with bursts, a cap on what one that cannot keep up can pin in memory.
    let max_queued = config.max_message.saturating_mul(16).max(16 << 20);
    let peer = match Peer::new(id.clone(), stream, config.write_timeout, max_queued) {
        Ok(peer) => Arc::new(peer),
        Err(e) => return log::warn!("{id}: {e}"),
    };
    let member = join(&server.clients, addr, Arc::clone(&peer));
    log::info!("{id} connected ({} clients)", server.client_count());
    let receiver = Receiver::new(config.max_message, &id);
    // Messages come in batches: all those that one read completed, in order.
    let ending = run(&peer, receiver, pending, config.ping_interval, |messages| {
        if config.echo {
            peer.send_messages(messages)
        } else {
            notify(&server.clients, &id, &messages);
            Ok(())
        }
    });
    // Leave the table at once, then close TCP the polite way, which can
    // take a moment (§7.1.1, `Peer::close_tcp`).
    drop(member);
    log::info!("{id} disconnected: {ending}");
    peer.close_tcp();
}

/// Plain HTTP on the same port: `GET /` is the chat page.
fn serve_http(stream: &TcpStream, id: &str, request: &Request) {
    if request.method != "GET" {
        return refuse(
            stream,
            id,
            &HandshakeError::MethodNotAllowed(request.method.clone()),
        );
    }
    let path = request.path.split('?').next().unwrap_or("");
    if path != "/" {
        return refuse(stream, id, &HandshakeError::NotFound(request.path.clone()));
    }
    log::info!("{id}: GET / (the chat page)");
    let response = http_response((200, "OK"), "text/html; charset=utf-8", "", PAGE.as_bytes());
    let _ = send_http(stream, &response);
}

/// Answers a refused handshake with its HTTP status and closes.
fn refuse(stream: &TcpStream, id: &str, error: &HandshakeError) {
    log::info!("{id}: handshake refused: {} {error}", error.status().0);
    let _ = send_http(stream, &error_response(error));
}
