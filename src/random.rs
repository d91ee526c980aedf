//! Random bytes from the operating system, for the client's side of the
//! protocol.
//!
//! A client needs randomness twice. Its `Sec-WebSocket-Key` is "a randomly
//! selected 16-byte value" (RFC 6455 §4.1), and every frame it sends is
//! masked with a key that "MUST be derived from a strong source of entropy"
//! (§5.3; §10.3 explains the attack on proxies this defeats, and chapter 13
//! retells it). A server needs none, which is why this module only appears
//! with the client.
//!
//! Why not a random-number crate? Because the operating system already
//! keeps a cryptographically strong generator, seeded from hardware events,
//! and Linux hands out its bytes through a file: `/dev/urandom`. Reading it
//! with `std::fs` is all a client needs. (The `getrandom` system call is
//! the same generator without a file descriptor; reading the file keeps
//! this free of `unsafe`.) A pseudo-random generator seeded from the clock,
//! the usual shortcut, is exactly what §5.3 forbids: anyone who can guess
//! the seed can predict every key.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::sync::{Mutex, OnceLock};

/// Where the bytes come from.
pub const SOURCE: &str = "/dev/urandom";

/// The open source, shared by every caller. Reading 4 bytes per frame from
/// a file would cost a system call per frame; the buffer reads 8 KiB at a
/// time (2,048 masking keys), and the bytes are no less random for waiting
/// in memory.
fn source() -> io::Result<&'static Mutex<BufReader<File>>> {
    static SOURCE_FILE: OnceLock<Mutex<BufReader<File>>> = OnceLock::new();
    if let Some(source) = SOURCE_FILE.get() {
        return Ok(source);
    }
    let file = File::open(SOURCE)?;
    Ok(SOURCE_FILE.get_or_init(|| Mutex::new(BufReader::with_capacity(8192, file))))
}

/// Fills `bytes` from the operating system's generator.
pub fn fill(bytes: &mut [u8]) -> io::Result<()> {
    let mut source = source()?
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    source.read_exact(bytes)
}

/// A masking key for one frame (§5.3: "a new masking key chosen from the
/// set of allowed 32-bit values", unpredictable). The session calls this
/// for every frame it sends as a client.
///
/// The client calls [`fill`] once before its first frame (for its
/// `Sec-WebSocket-Key`), so the source is known to work by the time this
/// runs; if the kernel stops handing out random bytes after that, the
/// process cannot go on safely, and stops with the reason.
pub fn mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    if let Err(e) = fill(&mut key) {
        // Sending a frame with a predictable key would be worse than
        // stopping: §10.3.
        let _ = writeln!(
            std::io::stderr(),
            "wschat: cannot read {SOURCE} for a masking key: {e}"
        );
        std::process::exit(1);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_from_call_to_call() {
        // Four random bytes repeat by chance once in 2^32 draws: 100 draws
        // with a repeat mean the source is broken, not unlucky.
        let keys: std::collections::HashSet<[u8; 4]> = (0..100).map(|_| mask_key()).collect();
        assert_eq!(keys.len(), 100);
    }

    #[test]
    fn fill_fills_every_byte() {
        // 64 zero bytes from a working generator: about 2^-512.
        let mut bytes = [0u8; 64];
        fill(&mut bytes).unwrap();
        assert!(bytes.iter().any(|&b| b != 0));
    }
}
