//! wschat: a WebSocket chat server written by hand, to learn RFC 6455 from.
//!
//! The modules are listed in the order data flows through them, and each can
//! be read without looking ahead:
//!
//! 1. [`config`]: the command line.
//! 2. [`server`]: the TCP accept loop, one thread per client.
//! 3. [`handshake`]: the HTTP request that upgrades to WebSocket (§4).
//! 4. [`error`]: the faults a client can commit, and their close codes (§7.4).
//! 5. [`frame`]: the frame header, to and from bytes (§5.2).
//! 6. [`mask`]: unmasking client payloads (§5.3).
//! 7. [`utf8`]: checking text as it arrives (§8.1).
//! 8. [`close`]: close codes and close payloads (§5.5.1, §7).
//! 9. [`message`]: frames into messages: fragments, control frames, limits (§5.4-§5.6).
//! 10. [`connection`]: the blocking layer that joins all of the above to a socket.
//! 11. [`room`]: the client table and `notify`, the broadcast.
//!
//! Modules 3 to 9 never touch a socket: they turn bytes into values and values
//! into bytes, so they can be tested (and stepped through) with plain byte
//! strings.

pub mod config;
pub mod server;

pub mod handshake;

pub mod error;
pub mod frame;
pub mod mask;
pub mod utf8;

pub mod close;
pub mod message;

pub mod connection;
pub mod room;
