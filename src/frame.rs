//! The frame (RFC 6455 §5.2): the unit WebSocket sends on the wire.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! This module turns the header into a [`FrameHeader`] and back, from and to
//! plain bytes. [`FrameHeader::parse`] never reads a socket: given too few
//! bytes it answers `Ok(None)`, "need more". The payload that follows the
//! header is the message layer's business ([`crate::message`]).

use crate::error::ProtocolError;
use std::fmt;

/// A header is at most 2 + 8 (64-bit length) + 4 (masking key) bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a frame carries (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next piece of a fragmented message.
    Continuation,
    /// 0x1: the first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: the closing handshake (§5.5.1).
    Close,
    /// 0x9: a keep-alive or liveness check, answered with a pong (§5.5.2).
    Ping,
    /// 0xA: the answer to a ping (§5.5.3).
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of the first header byte.
    pub fn from_u8(bits: u8) -> Result<OpCode, ProtocolError> {
        match bits {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            // §5.2: 0x3-0x7 are reserved for data frames, 0xB-0xF for control.
            other => Err(ProtocolError::ReservedOpcode(other)),
        }
    }

    /// The four bits that stand for this opcode on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// §5.5: control frames are those whose opcode has its top bit set.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// Which end of the connection we are. It decides masking (§5.1, §5.3):
/// "a client MUST mask all frames that it sends to the server", and "a
/// server MUST NOT mask any frames that it sends to the client". Each side
/// fails the connection on a frame masked the wrong way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: our frames go out unmasked.
    Server,
    /// We opened the connection: our frames go out masked.
    Client,
}

impl Role {
    /// The arrow a trace line puts before a frame this side received.
    /// Arrows follow the connection, not the side that prints them: `->`
    /// is a frame from the client to the server, `<-` one from the server
    /// to the client. So the client's log and the server's show the same
    /// line for the same frame.
    pub fn received_arrow(self) -> &'static str {
        match self {
            Role::Server => "->",
            Role::Client => "<-",
        }
    }

    /// The arrow a trace line puts before a frame this side sent.
    pub fn sent_arrow(self) -> &'static str {
        match self {
            Role::Server => "<-",
            Role::Client => "->",
        }
    }

    /// Whether the frames this side *receives* must be masked.
    pub fn expects_masked_frames(self) -> bool {
        self == Role::Server
    }
}

/// Everything before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final fragment of its message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the low three bits (always 0 without extensions).
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends (§5.3).
    pub mask: Option<[u8; 4]>,
    /// The payload's length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header for a frame the server sends: unmasked (§5.1), final.
    pub fn server(opcode: OpCode, payload_len: usize) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len: payload_len as u64,
        }
    }

    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` ends inside the header, and otherwise the
    /// header and its length in bytes. Faults are reported as soon as the
    /// bytes that show them have arrived: a reserved opcode fails on the
    /// first byte, without waiting for the rest.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        let rsv = (first >> 4) & 0x7;
        let opcode = OpCode::from_u8(first & 0x0F)?;
        // §5.2: "If a nonzero value is received and none of the negotiated
        // extensions defines the meaning of such a nonzero value, the
        // receiving endpoint MUST _Fail the WebSocket Connection_."
        if rsv != 0 {
            return Err(ProtocolError::ReservedBits(rsv));
        }
        // §5.5: "Control frames themselves MUST NOT be fragmented."
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        let Some(&second) = buf.get(1) else {
            return Ok(None);
        };
        let masked = second & 0x80 != 0;
        let Some((payload_len, len_bytes)) = parse_payload_len(second & 0x7F, &buf[2..])? else {
            return Ok(None);
        };
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less".
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong(payload_len));
        }
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            let Some(key) = buf.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, header_len)))
    }

    /// Appends the encoded header to `out`, choosing the shortest length form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut first = self.opcode.as_u8() | (self.rsv & 0x7) << 4;
        if self.fin {
            first |= 0x80;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.push(first);
        // §5.2: 0-125 fit in the 7 bits; 126 means a 16-bit length follows,
        // 127 a 64-bit one.
        match self.payload_len {
            len @ 0..=125 => out.push(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }
}

/// Decodes the 7-bit length and, if it says so, the 16- or 64-bit length that
/// follows it in `rest`. Returns the length and how many extra bytes it took.
fn parse_payload_len(len7: u8, rest: &[u8]) -> Result<Option<(u64, usize)>, ProtocolError> {
    match len7 {
        0..=125 => Ok(Some((u64::from(len7), 0))),
        126 => {
            let Some(bytes) = rest.get(..2) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            // §5.2: "the minimal number of bytes MUST be used to encode the length".
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength(len));
            }
            Ok(Some((len, 2)))
        }
        _ => {
            let Some(bytes) = rest.get(..8) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            // §5.2: "the most significant bit MUST be 0".
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthTooLarge(len));
            }
            if len <= 0xFFFF {
                return Err(ProtocolError::NonMinimalLength(len));
            }
            Ok(Some((len, 8)))
        }
    }
}

/// Appends a whole server frame (header and unmasked payload) to `out`.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    FrameHeader::server(opcode, payload.len()).encode(out);
    out.extend_from_slice(payload);
}

/// The one-line description used by the `trace` log, for instance
/// `FIN=1 RSV=000 opcode=TEXT(0x1) MASK=1 key=37fa213d payload_len=5`.
impl fmt::Display for FrameHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.opcode {
            OpCode::Continuation => "CONT",
            OpCode::Text => "TEXT",
            OpCode::Binary => "BINARY",
            OpCode::Close => "CLOSE",
            OpCode::Ping => "PING",
            OpCode::Pong => "PONG",
        };
        write!(
            f,
            "FIN={} RSV={:03b} opcode={name}({:#x}) MASK={}",
            u8::from(self.fin),
            self.rsv,
            self.opcode.as_u8(),
            u8::from(self.mask.is_some()),
        )?;
        if let Some(key) = self.mask {
            write!(f, " key={}", hex(&key, ""))?;
        }
        write!(f, " payload_len={}", self.payload_len)
    }
}

/// Bytes as lowercase hex, joined by `sep`: the form the docs and logs use.
pub fn hex(bytes: &[u8], sep: &str) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: OpCode, fin: bool, mask: Option<[u8; 4]>, len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len: len,
        }
    }

    fn encoded(h: &FrameHeader) -> Vec<u8> {
        let mut out = Vec::new();
        h.encode(&mut out);
        out
    }

    /// Parses `bytes` as one header and checks it encodes back to them.
    fn round_trip(bytes: &[u8], expected: FrameHeader) {
        assert_eq!(FrameHeader::parse(bytes), Ok(Some((expected, bytes.len()))));
        assert_eq!(encoded(&expected), bytes);
    }

    #[test]
    fn rfc_examples_parse_and_encode() {
        // §5.7: a single-frame unmasked text message "Hello".
        let mut hello = Vec::new();
        encode_frame(OpCode::Text, b"Hello", &mut hello);
        assert_eq!(hello, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        round_trip(&hello[..2], header(OpCode::Text, true, None, 5));
        // §5.7: a single-frame masked text message "Hello".
        let key = [0x37, 0xfa, 0x21, 0x3d];
        round_trip(
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d],
            header(OpCode::Text, true, Some(key), 5),
        );
        // §5.7: the first fragment of an unmasked "Hel" + "lo".
        round_trip(&[0x01, 0x03], header(OpCode::Text, false, None, 3));
        round_trip(&[0x80, 0x02], header(OpCode::Continuation, true, None, 2));
        // §5.7: 256 bytes binary in a single unmasked frame, and 64 KiB.
        round_trip(
            &[0x82, 0x7E, 0x01, 0x00],
            header(OpCode::Binary, true, None, 256),
        );
        round_trip(
            &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0],
            header(OpCode::Binary, true, None, 65536),
        );
    }

    #[test]
    fn lengths_use_the_shortest_form() {
        let cases: [(u64, &[u8]); 7] = [
            (0, &[0x82, 0x00]),
            (125, &[0x82, 0x7D]),
            (126, &[0x82, 0x7E, 0x00, 0x7E]),
            (65535, &[0x82, 0x7E, 0xFF, 0xFF]),
            (65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
            (1 << 20, &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x10, 0, 0]),
            ((1 << 20) + 1, &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x10, 0, 1]),
        ];
        for (len, bytes) in cases {
            round_trip(bytes, header(OpCode::Binary, true, None, len));
        }
    }

    #[test]
    fn header_split_anywhere_needs_more_bytes() {
        let bytes = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..bytes.len() {
            assert_eq!(FrameHeader::parse(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        assert!(FrameHeader::parse(&bytes).unwrap().is_some());
    }

    #[test]
    fn rsv_bits_without_extension_fail() {
        for first in [0xC1, 0xA1, 0x91, 0xF1] {
            let err = FrameHeader::parse(&[first]).unwrap_err();
            assert!(matches!(err, ProtocolError::ReservedBits(_)));
            assert_eq!(err.close_code(), 1002);
        }
    }

    #[test]
    fn reserved_opcodes_fail_on_the_first_byte() {
        for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let err = FrameHeader::parse(&[0x80 | op]).unwrap_err();
            assert_eq!(err, ProtocolError::ReservedOpcode(op));
            assert_eq!(err.close_code(), 1002);
        }
    }

    #[test]
    fn control_frames_are_not_fragmented() {
        for op in [0x08, 0x09, 0x0A] {
            let err = FrameHeader::parse(&[op]).unwrap_err();
            assert_eq!(err, ProtocolError::FragmentedControlFrame);
        }
    }

    #[test]
    fn control_frames_carry_at_most_125_bytes() {
        assert!(
            FrameHeader::parse(&[0x89, 0xFD, 1, 2, 3, 4])
                .unwrap()
                .is_some()
        );
        let err = FrameHeader::parse(&[0x89, 0xFE, 0x00, 0x7E]).unwrap_err();
        assert_eq!(err, ProtocolError::ControlFrameTooLong(126));
    }

    #[test]
    fn lengths_not_in_shortest_form_fail() {
        let err = FrameHeader::parse(&[0x82, 0x7E, 0x00, 0x05]).unwrap_err();
        assert_eq!(err, ProtocolError::NonMinimalLength(5));
        let err = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]).unwrap_err();
        assert_eq!(err, ProtocolError::NonMinimalLength(65535));
    }

    #[test]
    fn length_with_top_bit_set_fails() {
        let err = FrameHeader::parse(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(matches!(err, ProtocolError::LengthTooLarge(_)));
    }

    #[test]
    fn display_annotates_every_field() {
        let h = header(OpCode::Text, true, Some([0x37, 0xfa, 0x21, 0x3d]), 5);
        assert_eq!(
            h.to_string(),
            "FIN=1 RSV=000 opcode=TEXT(0x1) MASK=1 key=37fa213d payload_len=5"
        );
    }
}
