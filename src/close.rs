//! The close frame (RFC 6455 §5.5.1, §7): how a connection says goodbye.
//!
//! A close frame's payload is empty, or a two-byte big-endian status code
//! followed by a UTF-8 reason. The endpoint that receives a close frame
//! answers with one of its own (usually echoing the code), and then the
//! server closes the TCP connection (§7.1.1). This module parses and builds
//! close payloads and knows which codes may appear on the wire; the
//! session ([`crate::session`]) runs the exchange.

use crate::error::ProtocolError;

/// A close frame's status code and reason (§5.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Why the connection is closing (§7.4).
    pub code: u16,
    /// Text for humans; at most 123 bytes so that the payload fits in 125.
    pub reason: String,
}

/// §7.4: whether `code` may be sent in a close frame.
///
/// 1000-1003 and 1007-1014 are defined (1012-1014 by the IANA registry of
/// §11.7), 3000-3999 are for libraries and frameworks, and 4000-4999 for
/// private use. 1004 is reserved, and 1005, 1006 and 1015 are meant only for
/// reporting inside an endpoint: "MUST NOT be set as a status code in a Close
/// control frame".
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses a received close payload: `None` for an empty one.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        // §5.5.1: "the first two bytes of the body MUST be a 2-byte unsigned integer".
        [_] => Err(ProtocolError::CloseFrameOneByte),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            // §5.5.1: the reason is UTF-8; §8.1 says invalid UTF-8 fails the connection.
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8InCloseReason)?;
            Ok(Some(CloseFrame {
                code,
                reason: reason.to_string(),
            }))
        }
    }
}

/// Builds a close payload, cutting the reason at a character boundary so the
/// whole payload stays within the 125 bytes a control frame may carry.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// The payload that answers a received close (§5.5.1): "the endpoint
/// typically echos the status code it received". An empty close is answered
/// with an empty one.
pub fn reply_payload(received: &Option<CloseFrame>) -> Vec<u8> {
    match received {
        Some(frame) => frame.code.to_be_bytes().to_vec(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_class() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        let invalid = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in valid {
            let payload = code_payload(code);
            assert_eq!(
                parse_close_payload(&payload),
                Ok(Some(CloseFrame {
                    code,
                    reason: String::new()
                })),
                "{code}"
            );
        }
        for code in invalid {
            let err = parse_close_payload(&code_payload(code)).unwrap_err();
            assert_eq!(err, ProtocolError::InvalidCloseCode(code));
            assert_eq!(err.close_code(), 1002);
        }
    }

    fn code_payload(code: u16) -> Vec<u8> {
        code.to_be_bytes().to_vec()
    }

    #[test]
    fn empty_close_payload_is_allowed() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert!(reply_payload(&None).is_empty());
    }

    #[test]
    fn one_byte_close_payload_is_a_protocol_error() {
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::CloseFrameOneByte)
        );
    }

    #[test]
    fn reason_must_be_utf8() {
        let mut payload = code_payload(1000);
        payload.extend_from_slice(b"bye \xff");
        let err = parse_close_payload(&payload).unwrap_err();
        assert_eq!(err.close_code(), 1007);
        let mut payload = code_payload(1000);
        payload.extend_from_slice("au revoir, ça va".as_bytes());
        assert_eq!(
            parse_close_payload(&payload).unwrap().unwrap().reason,
            "au revoir, ça va"
        );
    }

    #[test]
    fn reply_echoes_the_code() {
        let frame = Some(CloseFrame {
            code: 4001,
            reason: "done".into(),
        });
        assert_eq!(reply_payload(&frame), vec![0x0F, 0xA1]);
    }

    #[test]
    fn long_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(1002, &reason);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
