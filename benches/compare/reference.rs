//! The reference servers: the same two services as wschat (`--echo` and the
//! chat), written with tungstenite 0.30 the way wschat is written. Blocking
//! `std::net`, one OS thread per client with the same 128 KiB stack, TCP_NODELAY,
//! and the same message size limit. They run as child processes of the
//! benchmark, started as `compare --serve tungstenite-echo|tungstenite-chat
//! --listen ADDR --max-message BYTES`, so that each server has a process
//! of its own whose memory and threads can be read from /proc.
//!
//! Echo: one thread per client reads a message and sends it back with
//! `WebSocket::send` (write and flush), as tungstenite's own
//! `examples/server.rs` does.
//!
//! Chat: a tungstenite `WebSocket` is one object for both directions, and
//! its `read` blocks, so it cannot simply be shared between the client's
//! reading thread and the threads that broadcast to it. Two designs are
//! provided, both thread per client:
//!
//! - `tungstenite-chat` (the reference in the results): *a shared writer
//!   behind a lock*. Each client has a second `WebSocket` over a clone of its
//!   socket, used only for sending, in a `Mutex`. Broadcasting threads lock
//!   it and `send` directly, as wschat's threads write directly to a client's
//!   socket. The reading `WebSocket`'s own replies (the handshake response,
//!   pongs, the close reply) go through the same lock, so frames never
//!   interleave. One thread per client, no extra wake-ups.
//! - `tungstenite-chat-threads`: *a writer thread per client*, fed by a
//!   bounded channel. The writer is the only thread that writes to the
//!   socket; the reader's replies go through the channel too. It writes
//!   everything queued (`WebSocket::write`) and flushes once, so a burst
//!   becomes one system call. Two threads per client, and every delivery
//!   wakes one.
//!
//! A third design, one `Mutex<WebSocket>` per client shared by reader and
//! broadcasters with a short read timeout, was rejected: the reader holds
//! the lock while it waits in `read`, so every broadcast to that client waits
//! for the timeout, and a thousand idle clients polling every few
//! milliseconds burn CPU for nothing.
//!
//! The client table is the same shape as wschat's: a `Mutex<HashMap>`
//! copied out under the lock and written to after it is released. With the
//! writer thread, a client whose channel is full (4,096 messages waiting)
//! is disconnected, as wschat drops a client whose outbox is full; with the
//! shared writer, a client that stops reading holds up a broadcast for at
//! most the write timeout (10 s), after which it is disconnected.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// The same stack size as wschat's client threads (`CLIENT_STACK_SIZE`).
const STACK: usize = wschat::server::CLIENT_STACK_SIZE;
/// Messages that may wait for one chat client before it counts as too slow.
const QUEUE: usize = 4096;

/// Runs one reference server until killed: `kind` is `tungstenite-echo`,
/// `tungstenite-chat` or `tungstenite-chat-threads`.
pub fn serve(kind: &str, listen: SocketAddr, max_message: usize) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let table: Table = Arc::default();
    let locked: LockedTable = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let table = Arc::clone(&table);
        let locked = Arc::clone(&locked);
        let kind = kind.to_string();
        let _ = thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || match kind.as_str() {
                "tungstenite-echo" => echo_client(stream, config),
                "tungstenite-chat-threads" => chat_client(stream, config, &table),
                _ => locked_chat_client(stream, config, &locked),
            });
    }
    Ok(())
}

fn echo_client(stream: TcpStream, config: WebSocketConfig) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(message).is_err() {
                    return;
                }
            }
            // Pings, pongs and close frames are answered inside `read`.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

type Table = Arc<Mutex<HashMap<SocketAddr, Arc<Client>>>>;

/// What broadcasters hold for one chat client.
struct Client {
    queue: SyncSender<Outgoing>,
    /// To disconnect a client that is too slow.
    stream: TcpStream,
}

enum Outgoing {
    /// A message broadcast to this client.
    Message(Message),
    /// Bytes the reader's `WebSocket` wrote: the handshake response, pongs,
    /// the close reply. Already whole frames.
    Raw(Vec<u8>),
    /// The reader has finished: write what is queued, then close.
    End,
}

/// The reader's stream: reads from the socket, but everything written to
/// it goes to the writer thread.
struct ReadHalf {
    stream: TcpStream,
    queue: SyncSender<Outgoing>,
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.queue
            .send(Outgoing::Raw(buf.to_vec()))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn chat_client(stream: TcpStream, config: WebSocketConfig, table: &Table) {
    let _ = stream.set_nodelay(true);
    let (Ok(addr), Ok(write_side), Ok(kill_side)) =
        (stream.peer_addr(), stream.try_clone(), stream.try_clone())
    else {
        return;
    };
    let _ = write_side.set_write_timeout(Some(Duration::from_secs(10)));
    let (queue, outgoing) = sync_channel(QUEUE);
    let writer = WebSocket::from_raw_socket(write_side, Role::Server, Some(config));
    let Ok(writer) = thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || write_loop(writer, outgoing))
    else {
        return;
    };
    let read_half = ReadHalf {
        stream,
        queue: queue.clone(),
    };
    if let Ok(mut ws) = tungstenite::accept_with_config(read_half, Some(config)) {
        let id = format!("ID{}", addr.port());
        let client = Arc::new(Client {
            queue: queue.clone(),
            stream: kill_side,
        });
        table.lock().unwrap().insert(addr, client);
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    broadcast(table, Message::text(format!("{id}: {}", text.as_str())))
                }
                Ok(message @ Message::Binary(_)) => broadcast(table, message),
                // No more broadcasts after the close reply (§5.5.1), which
                // the next `read` writes.
                Ok(Message::Close(_)) => drop(table.lock().unwrap().remove(&addr)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        table.lock().unwrap().remove(&addr);
    }
    let _ = queue.send(Outgoing::End);
    let _ = writer.join();
}

/// Same pattern as wschat's `notify`: copy the list under the lock, send after.
fn broadcast(table: &Table, message: Message) {
    let clients: Vec<Arc<Client>> = table.lock().unwrap().values().cloned().collect();
    for client in clients {
        if let Err(TrySendError::Full(_)) =
            client.queue.try_send(Outgoing::Message(message.clone()))
        {
            let _ = client.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The writer thread: everything queued is written, then flushed once.
fn write_loop(mut ws: WebSocket<TcpStream>, outgoing: Receiver<Outgoing>) {
    'batches: while let Ok(first) = outgoing.recv() {
        let mut next = Some(first);
        while let Some(item) = next {
            let written = match item {
                Outgoing::Message(message) => ws.write(message).is_ok(),
                Outgoing::Raw(bytes) => {
                    ws.flush().is_ok() && ws.get_mut().write_all(&bytes).is_ok()
                }
                Outgoing::End => break 'batches,
            };
            if !written {
                // The socket failed: shutting it down ends the reader too.
                let _ = ws.get_ref().shutdown(Shutdown::Both);
                return;
            }
            next = outgoing.try_recv().ok();
        }
        if ws.flush().is_err() {
            let _ = ws.get_ref().shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = ws.flush();
    let _ = ws.get_ref().shutdown(Shutdown::Both);
}

type LockedTable = Arc<Mutex<HashMap<SocketAddr, Arc<SharedWriter>>>>;

/// The sending side of one client, shared by every thread that writes to it.
struct SharedWriter {
    ws: Mutex<WebSocket<TcpStream>>,
}

/// The reader's stream in the shared-writer design: reads from the socket;
/// what the reader's `WebSocket` writes goes out under the writer's lock.
struct LockedReadHalf {
    stream: TcpStream,
    writer: Arc<SharedWriter>,
}

impl Read for LockedReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for LockedReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut ws = self.writer.ws.lock().unwrap();
        ws.get_mut().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn locked_chat_client(stream: TcpStream, config: WebSocketConfig, table: &LockedTable) {
    let _ = stream.set_nodelay(true);
    let (Ok(addr), Ok(write_side)) = (stream.peer_addr(), stream.try_clone()) else {
        return;
    };
    let _ = write_side.set_write_timeout(Some(Duration::from_secs(10)));
    let writer = Arc::new(SharedWriter {
        ws: Mutex::new(WebSocket::from_raw_socket(
            write_side,
            Role::Server,
            Some(config),
        )),
    });
    let read_half = LockedReadHalf {
        stream,
        writer: Arc::clone(&writer),
    };
    let Ok(mut ws) = tungstenite::accept_with_config(read_half, Some(config)) else {
        return;
    };
    let id = format!("ID{}", addr.port());
    table.lock().unwrap().insert(addr, Arc::clone(&writer));
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                locked_broadcast(table, Message::text(format!("{id}: {}", text.as_str())))
            }
            Ok(message @ Message::Binary(_)) => locked_broadcast(table, message),
            Ok(Message::Close(_)) => drop(table.lock().unwrap().remove(&addr)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    table.lock().unwrap().remove(&addr);
    let _ = ws.get_ref().stream.shutdown(Shutdown::Both);
}

fn locked_broadcast(table: &LockedTable, message: Message) {
    let writers: Vec<Arc<SharedWriter>> = table.lock().unwrap().values().cloned().collect();
    for writer in writers {
        let mut ws = writer.ws.lock().unwrap();
        if ws.send(message.clone()).is_err() {
            // Too slow (the write timed out) or gone: disconnect it.
            let _ = ws.get_ref().shutdown(Shutdown::Both);
        }
    }
}
