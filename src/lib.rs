//! wschat: a WebSocket chat server written by hand, to learn RFC 6455 from.
//!
//! The modules are listed in the order data flows through them, from the
//! command line and the first bytes of a request up to the chat room and
//! the accept loop. Each uses only modules above it, so each can be read
//! without looking ahead (`tests/docs.rs` checks that this stays true):
//!
//! 1. [`config`]: the command line.
//! 2. [`handshake`]: the HTTP request that upgrades to WebSocket (§4).
//! 3. [`error`]: the faults a peer can commit, and their close codes (§7.4).
//! 4. [`frame`]: the frame header, to and from bytes (§5.2).
//! 5. [`mask`]: masking and unmasking payloads (§5.3).
//! 6. [`utf8`]: checking text as it arrives (§8.1).
//! 7. [`close`]: close codes and close payloads (§5.5.1, §7).
//! 8. [`message`]: frames into messages: fragments, control frames, limits (§5.4-§5.6).
//! 9. [`session`]: one end of a connection: pongs, the closing handshake,
//!    failing, keep-alive, what waits to be sent (§5.5, §7).
//! 10. [`os`]: what std lacks (signals, a send that never waits), through a
//!     few lines of FFI to the C library.
//! 11. [`connection`]: the blocking layer: a reader and a writer thread that
//!     move bytes between a socket and a session.
//! 12. [`resp`]: the Redis protocol, for sharing one room among many
//!     processes (`--redis`).
//! 13. [`broker`]: publish and subscribe through Redis, and serving alone
//!     while Redis is away.
//! 14. [`chat`]: the chat's policy: names, the line format, echo or chat,
//!     the client table and `notify`, the broadcast.
//! 15. [`server`]: the accept loop, a thread per client, the graceful stop.
//!
//! Then the other side, `wschat connect`, which reuses modules 3 to 9:
//!
//! 16. [`random`]: random bytes from the operating system, for keys (§5.3).
//! 17. [`client_handshake`]: the opening handshake from the client's side (§4.1).
//! 18. [`client`]: the client's blocking layer: a socket and stdin.
//!
//! Modules 2 to 9, 12 and 17 never touch a socket or a clock: they turn
//! bytes into values and values into bytes, so they can be tested (and
//! stepped through) with plain byte strings.

pub mod config;

pub mod handshake;

pub mod error;
pub mod frame;
pub mod mask;
pub mod utf8;

pub mod close;
pub mod message;
pub mod session;

pub mod os;

pub mod connection;

pub mod resp;

pub mod broker;

pub mod chat;

pub mod server;

pub mod random;

pub mod client_handshake;

pub mod client;
