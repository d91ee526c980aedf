//! The chat room: the client table and [`notify`], which broadcasts.
//!
//! Every upgraded client is in one table, an `Arc<Mutex<HashMap<..>>>` shared
//! by all client threads. A client joins after its handshake and leaves the
//! moment its thread ends, however it ends: the [`Member`] guard removes it
//! when dropped, even if the thread panics.
//!
//! [`notify`] encodes a message once, copies the list of peers while holding
//! the table's lock, lets go of the lock, and only then writes. Holding the
//! lock while writing would make every join, leave and broadcast wait for
//! the slowest client. Each [`Peer`] keeps its own frames in order and whole
//! (see [`crate::connection::Peer`]), so broadcasts from several threads at
//! once never interleave on any one socket.

use crate::connection::Peer;
use crate::frame::{OpCode, encode_frame};
use crate::message::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Every connected client, keyed by its address.
///
/// The key is the whole peer address rather than the `ID<port>` name: two
/// clients on different hosts may use the same port, but no two live TCP
/// connections to one listener share an address.
pub type ClientTable = Arc<Mutex<HashMap<SocketAddr, Arc<Peer>>>>;

/// A new, empty client table.
pub fn new_table() -> ClientTable {
    Arc::new(Mutex::new(HashMap::new()))
}

fn lock(table: &ClientTable) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Peer>>> {
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

/// Adds a client to the table until the returned [`Member`] is dropped.
pub fn join(table: &ClientTable, addr: SocketAddr, peer: Arc<Peer>) -> Member {
    lock(table).insert(addr, peer);
    Member {
        table: Arc::clone(table),
        addr,
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        lock(&self.table).remove(&self.addr);
    }
}

/// How many clients are in the table.
pub fn client_count(table: &ClientTable) -> usize {
    lock(table).len()
}

/// The frame everyone receives when `sender` sends `message`: a text message
/// `M` becomes the text `ID54321: M`, a binary message is relayed unchanged.
pub fn chat_frame(sender: &str, message: &Message) -> Arc<[u8]> {
    let mut frame = Vec::new();
    match message {
        Message::Text(text) => {
            let line = format!("{sender}: {text}");
            encode_frame(OpCode::Text, line.as_bytes(), &mut frame);
        }
        Message::Binary(data) => encode_frame(OpCode::Binary, data, &mut frame),
    }
    frame.into()
}

/// Broadcasts `message` from `sender` to every client, the sender included.
///
/// A client that cannot take the frame is dropped by its [`Peer`] and leaves
/// the table when its thread ends; the others are not affected.
pub fn notify(table: &ClientTable, sender: &str, message: &Message) {
    let frame = chat_frame(sender, message);
    let peers: Vec<Arc<Peer>> = lock(table).values().cloned().collect();
    for peer in peers {
        if let Err(e) = peer.send_frame(Arc::clone(&frame)) {
            log::debug!("{}: not delivered: {e}", peer.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_prefixed_with_the_sender_id() {
        let frame = chat_frame("ID54321", &Message::Text("hello".into()));
        let mut expected = vec![0x81, 14];
        expected.extend_from_slice(b"ID54321: hello");
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn binary_is_relayed_unchanged() {
        let frame = chat_frame("ID1", &Message::Binary(vec![0, 1, 2]));
        assert_eq!(&frame[..], &[0x82, 3, 0, 1, 2]);
    }
}
