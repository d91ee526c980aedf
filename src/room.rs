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
//!
//! [`notify`] takes the messages in batches: all those that one read of the
//! sender's socket completed (usually one). Their frames are encoded into
//! one buffer, so each client gets the lot in one write instead of one
//! write per message.

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
    encode_chat_frame(sender, message, &mut frame);
    frame.into()
}

/// Appends the frame of [`chat_frame`] to `out`.
fn encode_chat_frame(sender: &str, message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Text(text) => {
            let line = format!("{sender}: {text}");
            encode_frame(OpCode::Text, line.as_bytes(), out);
        }
        Message::Binary(data) => encode_frame(OpCode::Binary, data, out),
    }
}

/// Broadcasts `messages` from `sender`, in order, to every client, the
/// sender included.
///
/// The frames are encoded once, back to back into one buffer that every
/// client's outbox shares. Every write to a socket is a system call and, for
/// a thousand clients, a thousand of them per broadcast: a burst of messages
/// sent together divides that by the burst's size.
///
/// A client that cannot take the frames is dropped by its [`Peer`] and leaves
/// the table when its thread ends; the others are not affected.
pub fn notify(table: &ClientTable, sender: &str, messages: &[Message]) {
    let mut frames = Vec::new();
    for message in messages {
        encode_chat_frame(sender, message, &mut frames);
    }
    let frames: Arc<[u8]> = frames.into();
    let peers: Vec<Arc<Peer>> = lock(table).values().cloned().collect();
    for peer in peers {
        if let Err(e) = peer.send_frame(Arc::clone(&frames)) {
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
    fn a_batch_is_the_frames_back_to_back() {
        let messages = [Message::Text("a".into()), Message::Binary(vec![7])];
        let mut frames = Vec::new();
        for message in &messages {
            encode_chat_frame("ID1", message, &mut frames);
        }
        assert_eq!(frames, [&[0x81, 6][..], b"ID1: a", &[0x82, 1, 7]].concat());
    }

    #[test]
    fn binary_is_relayed_unchanged() {
        let frame = chat_frame("ID1", &Message::Binary(vec![0, 1, 2]));
        assert_eq!(&frame[..], &[0x82, 3, 0, 1, 2]);
    }
}
