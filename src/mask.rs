//! Masking (RFC 6455 §5.3): every byte a client sends in a payload is XORed
//! with one of the four bytes of the frame's masking key, in turn.
//!
//! ```text
//! transformed-octet-i = original-octet-i XOR masking-key-octet-(i MOD 4)
//! ```
//!
//! XOR is its own inverse, so the same function masks and unmasks. Clients
//! mask so that a script in a browser cannot choose the bytes that cross the
//! network, which protects proxies that would otherwise take WebSocket bytes
//! for an HTTP request and cache the answer (§10.3).
//!
//! [`apply_mask`] works on eight bytes at a time: the key, repeated twice, is
//! one `u64`, and one XOR of two `u64`s masks eight payload bytes. The
//! compiler turns the loop into SIMD instructions where the CPU has them.

/// XORs `buf` with `key` in place, where `buf` starts `offset` bytes into the
/// payload (a payload may arrive in several reads).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that key[0] lines up with buf[0].
    let key = rotate(key, offset % 4);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // Fewer than eight bytes are left; since 8 is a multiple of 4, they start
    // at key[0] again.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// The key as seen from `shift` bytes into a four-byte cycle.
///
/// Written out byte by byte: `<[u8]>::rotate_left` would do the same, but
/// it is made for slices of any length and compiles to calls to `memcpy`
/// and `memmove`, paid on every call whose payload piece does not start at
/// a multiple of four.
fn rotate(key: [u8; 4], shift: usize) -> [u8; 4] {
    [
        key[shift % 4],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC's formula, one byte at a time, to compare against.
    fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_hello_example_unmasks() {
        // §5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn word_at_a_time_matches_the_formula_at_every_length_and_offset() {
        let key = [0xA1, 0x02, 0xC3, 0x74];
        for len in 0..40 {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast, key, offset);
                mask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn payload_unmasked_in_pieces_equals_unmasked_whole() {
        let key = [9, 8, 7, 6];
        let original: Vec<u8> = (0..=255).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = original.clone();
        let mut start = 0;
        for size in [1, 3, 2, 7, 13, 64, 5] {
            let end = (start + size).min(pieces.len());
            apply_mask(&mut pieces[start..end], key, start);
            start = end;
        }
        apply_mask(&mut pieces[start..], key, start);
        assert_eq!(pieces, whole);
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let original = b"any bytes at all, masked twice, come back".to_vec();
        let mut buf = original.clone();
        apply_mask(&mut buf, [1, 2, 3, 4], 3);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [1, 2, 3, 4], 3);
        assert_eq!(buf, original);
    }
}
