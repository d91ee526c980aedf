//! UTF-8 checked as it arrives (RFC 6455 §5.6, §8.1).
//!
//! A text message may be split into fragments anywhere, even inside a
//! multi-byte character, so a fragment on its own can end in half a
//! character and still be part of valid text. But once the bytes received so
//! far can no longer be the start of valid UTF-8 (`0xC0`, say, or `0xED 0xA0`,
//! the start of a surrogate), no later byte can repair them, and §8.1 asks the
//! endpoint to fail the connection. [`Utf8Validator`] fails at that point,
//! without waiting for the message to end.

use crate::error::ProtocolError;

/// Remembers how much of a growing text message has been checked.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes at the start of the message that are whole, valid characters.
    checked: usize,
}

impl Utf8Validator {
    /// Checks the bytes of `message` not yet checked. `message` is the whole
    /// text received so far; only its new part is looked at (plus at most
    /// three bytes of an unfinished character from last time).
    pub fn feed(&mut self, message: &[u8]) -> Result<(), ProtocolError> {
        match std::str::from_utf8(&message[self.checked..]) {
            Ok(_) => {
                self.checked = message.len();
                Ok(())
            }
            // `error_len() == None`: the input ends inside a character whose
            // bytes are valid so far, so more bytes may complete it.
            Err(e) if e.error_len().is_none() => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Turns `message`, now complete, into a `String`. What [`feed`](Self::feed)
    /// has not seen is at most an unfinished character at the end, which
    /// makes the whole message invalid (§8.1); `String::from_utf8` checks
    /// the rest again, which is cheap next to reading it off the network,
    /// and keeps this module free of `unsafe`.
    pub fn finish(self, message: Vec<u8>) -> Result<String, ProtocolError> {
        String::from_utf8(message).map_err(|_| ProtocolError::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after another as a growing message; returns the
    /// index of the piece that failed, if one did.
    fn first_failure(pieces: &[&[u8]]) -> Option<usize> {
        let mut validator = Utf8Validator::default();
        let mut message = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            message.extend_from_slice(piece);
            if validator.feed(&message).is_err() {
                return Some(i);
            }
        }
        validator.finish(message).err().map(|_| pieces.len())
    }

    #[test]
    fn character_cut_across_fragments_is_valid() {
        // "κόσμε" with every possible cut into two pieces.
        let text = "κόσμε €𝄞".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(
                first_failure(&[&text[..cut], &text[cut..]]),
                None,
                "cut {cut}"
            );
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(first_failure(&bytes), None);
    }

    #[test]
    fn bytes_that_can_never_be_valid_fail_at_that_fragment() {
        // 0xF4 0x90 would be above U+10FFFF: the second piece fails at once,
        // and the third piece is never needed.
        let pieces: [&[u8]; 3] = [
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
            b"\x90",
            b"edited",
        ];
        assert_eq!(first_failure(&pieces), Some(1));
        // A surrogate (U+D800) fails on its second byte.
        assert_eq!(first_failure(&[b"ok", b"\xed", b"\xa0\x80"]), Some(2));
        // 0xFF is never UTF-8.
        assert_eq!(first_failure(&[b"\xff", b"abc"]), Some(0));
        // An overlong encoding of '/' fails on its first byte.
        assert_eq!(first_failure(&[b"\xc0", b"\xaf"]), Some(0));
    }

    #[test]
    fn message_ending_inside_a_character_fails_at_the_end() {
        assert_eq!(first_failure(&[b"abc\xe2\x82"]), Some(1));
        assert_eq!(first_failure(&[b"abc", b"\xe2", b"\x82"]), Some(3));
    }

    #[test]
    fn empty_message_is_valid() {
        assert_eq!(first_failure(&[]), None);
    }
}
