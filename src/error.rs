//! What can go wrong once the connection speaks WebSocket, and the close code
//! each fault is answered with.
//!
//! Every rule the frame and message layers enforce fails with one
//! [`ProtocolError`] variant, and [`ProtocolError::close_code`] is the one place
//! that maps faults to the status codes of RFC 6455 §7.4.1. The handshake has its
//! own error type, [`crate::handshake::Refusal`], because before the
//! upgrade a fault is answered with an HTTP status instead.

use std::fmt;

/// The close codes wschat sends (RFC 6455 §7.4.1). 1000 is also what a
/// client normally closes with; [`crate::close::is_valid_code`] decides which
/// codes a received close frame may carry.
pub mod code {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: u16 = 1000;
    /// 1001: the endpoint is going away (server shutting down, page closed).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1007: a message's data was not consistent with its type (bad UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: a generic "policy" violation (sent to a client that does not answer pings).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1013: Try Again Later, from the IANA registry of close codes (§11.7):
    /// the server is overloaded (here: all clients' unfinished messages
    /// hold as much memory as `--max-buffered` allows).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A fault in what the client sent after the handshake.
///
/// Each one ends the connection: RFC 6455 §7.1.7 calls this "_Fail the
/// WebSocket Connection_", which means sending a close frame with the code from
/// [`close_code`](Self::close_code) and then closing TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// RFC 6455 §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated".
    ReservedBits(u8),
    /// RFC 6455 §5.2: opcodes 3-7 and 0xB-0xF are reserved.
    ReservedOpcode(u8),
    /// RFC 6455 §5.5: "All control frames MUST have a payload length of 125
    /// bytes or less".
    ControlFrameTooLong(u64),
    /// RFC 6455 §5.5: "Control frames themselves MUST NOT be fragmented."
    FragmentedControlFrame,
    /// RFC 6455 §5.2: the most significant bit of a 64-bit length "MUST be 0".
    LengthTooLarge(u64),
    /// RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the
    /// length".
    NonMinimalLength(u64),
    /// RFC 6455 §5.1: "a client MUST mask all frames that it sends to the server".
    UnmaskedFrame,
    /// RFC 6455 §5.1: "A client MUST close a connection if it detects a
    /// masked frame" from the server.
    MaskedFrame,
    /// RFC 6455 §5.4: a continuation frame arrived with no message to continue.
    UnexpectedContinuation,
    /// RFC 6455 §5.4: a new text or binary frame arrived inside a fragmented message.
    ExpectedContinuation,
    /// RFC 6455 §5.5.1: a close frame's payload, if any, starts with a 2-byte code.
    CloseFrameOneByte,
    /// RFC 6455 §7.4: the close code is not one an endpoint may send.
    InvalidCloseCode(u16),
    /// RFC 6455 §5.6 and §8.1: text must be valid UTF-8.
    InvalidUtf8,
    /// RFC 6455 §5.5.1: a close frame's reason must be valid UTF-8 too.
    InvalidUtf8InCloseReason,
    /// The message would be larger than the configured `--max-message`.
    MessageTooBig {
        /// How many bytes the message would have once this frame is added.
        size: u64,
        /// The limit it passes.
        max: usize,
    },
    /// Buffering this frame would take the memory held by all clients'
    /// unfinished messages past `--max-buffered`.
    OverBudget {
        /// The limit for all clients together.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code that reports this fault to the client (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidUtf8InCloseReason => {
                code::INVALID_PAYLOAD
            }
            ProtocolError::MessageTooBig { .. } => code::MESSAGE_TOO_BIG,
            ProtocolError::OverBudget { .. } => code::TRY_AGAIN_LATER,
            _ => code::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits(rsv) => {
                write!(f, "RSV bits {rsv:03b} set but no extension was negotiated")
            }
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::ControlFrameTooLong(len) => {
                write!(f, "control frame payload of {len} bytes (at most 125)")
            }
            ProtocolError::FragmentedControlFrame => write!(f, "fragmented control frame"),
            ProtocolError::LengthTooLarge(len) => {
                write!(f, "64-bit payload length {len:#x} has its top bit set")
            }
            ProtocolError::NonMinimalLength(len) => {
                write!(f, "payload length {len} not in its shortest form")
            }
            ProtocolError::UnmaskedFrame => write!(f, "client frame is not masked"),
            ProtocolError::MaskedFrame => write!(f, "server frame is masked"),
            ProtocolError::UnexpectedContinuation => {
                write!(f, "continuation frame without a message to continue")
            }
            ProtocolError::ExpectedContinuation => {
                write!(f, "new data frame inside a fragmented message")
            }
            ProtocolError::CloseFrameOneByte => write!(f, "close frame payload of one byte"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            ProtocolError::InvalidUtf8 => write!(f, "invalid UTF-8 in text"),
            ProtocolError::InvalidUtf8InCloseReason => {
                write!(f, "invalid UTF-8 in a close frame's reason")
            }
            ProtocolError::OverBudget { max } => write!(
                f,
                "unfinished messages would take the server past its limit of {max} bytes; \
                 try again later"
            ),
            ProtocolError::MessageTooBig { size, max } => {
                write!(f, "message of {size} bytes is over the limit of {max}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}
