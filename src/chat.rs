//! The chat: the one file that says what wschat does with a message. To
//! change the chat (names, the line format, who receives what), change this
//! file; nothing below the connection needs to know.
//!
//! - A client is named after the port of its TCP peer address
//!   ([`client_name`]): a client at 127.0.0.1:54321 is `ID54321`.
//! - Every upgraded client is in one client table, an
//!   `Arc<Mutex<HashMap<..>>>` ([`ClientTable`]). A client joins before its
//!   `101` is sent and leaves the moment its reader ends, however it ends:
//!   the [`Member`] guard removes it when dropped.
//! - In chat mode, a text message `M` from `ID54321` reaches every client,
//!   the sender included, as the text `ID54321: M`; a binary message is
//!   relayed unchanged ([`notify`]). In echo mode a message goes back to its
//!   sender only.
//! - A client may have at most [`max_queued`] bytes waiting to be sent to
//!   it; past that it is too slow, and is dropped.
//!
//! - With `--redis`, the room is shared with every wschat on that Redis:
//!   a message goes to Redis first, and comes back to be delivered here,
//!   in the one order Redis gives all of them ([`crate::broker`]).
//!
//! A broadcast never waits for anyone: [`deliver`] copies the list of
//! clients while holding the table's lock, lets go of the lock, and queues
//! the frame for each client ([`Connection::send_shared`]), which sends it
//! without waiting, or hands it to a writer thread of the client's own.

use crate::broker::Broker;
use crate::config::Config;
use crate::connection::Connection;
use crate::frame::OpCode;
use crate::message::Message;
use crate::session::OutgoingFrame;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The name a client is known by: `ID` and the port of its address.
pub fn client_name(addr: SocketAddr) -> String {
    format!("ID{}", addr.port())
}

/// The slow-client budget: what may wait to be sent to one client. Sixteen
/// of the largest messages (at least 16 MiB): enough for a reader that
/// keeps up with bursts, a cap on what one that cannot keep up can pin.
pub fn max_queued(config: &Config) -> usize {
    config.max_message.saturating_mul(16).max(16 << 20)
}

/// What a text message `text` from `sender` becomes for everyone.
pub fn chat_line(sender: &str, text: &str) -> String {
    format!("{sender}: {text}")
}

/// Every connected client, keyed by its address.
///
/// The key is the whole peer address rather than the `ID<port>` name: two
/// clients on different hosts may use the same port, but no two live TCP
/// connections to one listener share an address.
pub type ClientTable = Arc<Mutex<HashMap<SocketAddr, Arc<Connection>>>>;

/// The chat room: the client table, whether this is an echo server, and
/// the Redis broker if the room is shared with other processes.
#[derive(Debug)]
pub struct Chat {
    /// Echo mode: every message goes back to its sender only.
    pub echo: bool,
    clients: ClientTable,
    broker: OnceLock<Arc<Broker>>,
}

impl Chat {
    /// An empty room.
    pub fn new(echo: bool) -> Chat {
        Chat {
            echo,
            clients: Arc::new(Mutex::new(HashMap::new())),
            broker: OnceLock::new(),
        }
    }

    /// Shares the room through Redis at `url` (`--redis`): connects, and
    /// from then on every message goes through it. Fails if Redis cannot
    /// be used now.
    pub fn share_through_redis(
        &self,
        url: &str,
        max_message: usize,
    ) -> Result<(), crate::broker::BrokerError> {
        let table = Arc::clone(&self.clients);
        let broker = Broker::start(
            url,
            max_message,
            Box::new(move |opcode, payload| deliver(&table, opcode, payload)),
        )?;
        let _ = self.broker.set(broker);
        Ok(())
    }

    fn table(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Connection>>> {
        lock(&self.clients)
    }

    /// Adds a client to the table until the returned [`Member`] is dropped.
    pub fn join(&self, addr: SocketAddr, connection: Arc<Connection>) -> Member {
        self.table().insert(addr, connection);
        Member {
            table: Arc::clone(&self.clients),
            addr,
        }
    }

    /// How many clients are in the table.
    pub fn client_count(&self) -> usize {
        self.table().len()
    }

    /// Every client in the table right now.
    pub fn clients(&self) -> Vec<Arc<Connection>> {
        self.table().values().cloned().collect()
    }

    /// What happens when `sender` sends `message`: echo, or broadcast
    /// (through Redis, if the room is shared).
    pub fn on_message(&self, sender: &Arc<Connection>, message: Message) {
        if self.echo {
            let _ = sender.send_message(message);
        } else if let Some(broker) = self.broker.get() {
            let (opcode, payload) = chat_frame(&sender.name, message);
            broker.publish(opcode, payload);
        } else {
            notify(&self.clients, &sender.name, message);
        }
    }
}

fn lock(table: &ClientTable) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Connection>>> {
    // The table is only ever inserted into or removed from while locked,
    // and neither can be left half-done, so a poisoned lock is still sound.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client's place in the table; leaving is dropping it.
#[derive(Debug)]
pub struct Member {
    table: ClientTable,
    addr: SocketAddr,
}

impl Drop for Member {
    fn drop(&mut self) {
        lock(&self.table).remove(&self.addr);
    }
}

/// The frame everyone receives when `sender` sends `message`: its opcode
/// and payload. Text `M` becomes `ID54321: M`; binary is unchanged.
pub fn chat_frame(sender: &str, message: Message) -> (OpCode, Vec<u8>) {
    match message {
        Message::Text(text) => (OpCode::Text, chat_line(sender, &text).into_bytes()),
        Message::Binary(data) => (OpCode::Binary, data),
    }
}

/// Broadcasts `message` from `sender` to every client, the sender included.
///
/// The frame is encoded once and shared by every client's queue. A client
/// whose queue is full is given up on by its session; the others are not
/// affected, and nobody waits.
pub fn notify(table: &ClientTable, sender: &str, message: Message) {
    let (opcode, payload) = chat_frame(sender, message);
    deliver(table, opcode, &payload);
}

/// Queues one frame for every client in `table`, without waiting for any.
pub fn deliver(table: &ClientTable, opcode: OpCode, payload: &[u8]) {
    let frame = OutgoingFrame::server(opcode, payload);
    let clients: Vec<Arc<Connection>> = lock(table).values().cloned().collect();
    for client in clients {
        if let Err(e) = client.send_shared(&frame) {
            log::debug!("{}: not delivered: {e:?}", client.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_named_after_its_port() {
        let addr: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        assert_eq!(client_name(addr), "ID54321");
    }

    #[test]
    fn text_is_prefixed_with_the_sender_name() {
        let (opcode, payload) = chat_frame("ID54321", Message::Text("hello".into()));
        assert_eq!(opcode, OpCode::Text);
        assert_eq!(payload, b"ID54321: hello");
    }

    #[test]
    fn binary_is_relayed_unchanged() {
        let (opcode, payload) = chat_frame("ID1", Message::Binary(vec![0, 1, 2]));
        assert_eq!((opcode, payload), (OpCode::Binary, vec![0, 1, 2]));
    }

    #[test]
    fn the_budget_is_sixteen_messages_and_at_least_16_mib() {
        let mut config = Config::default();
        assert_eq!(max_queued(&config), 16 << 20);
        config.max_message = 4 << 20;
        assert_eq!(max_queued(&config), 64 << 20);
    }
}
