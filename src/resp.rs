//! RESP, the Redis protocol (version 2), written by hand: the second wire
//! protocol in this repository, and a small one.
//!
//! A command is an array of bulk strings: `PUBLISH wschat hello` is
//!
//! ```text
//! *3\r\n$7\r\nPUBLISH\r\n$6\r\nwschat\r\n$5\r\nhello\r\n
//! ```
//!
//! and every reply starts with one byte that says its type: `+` a simple
//! string (`+PONG`), `-` an error, `:` an integer (`:2`, how many
//! subscribers a message reached), `$` a bulk string (a length, then that
//! many bytes), `*` an array (a count, then that many values). Once a
//! connection has subscribed, Redis pushes each message on it as an array:
//! `message`, the channel, the payload.
//!
//! Like the WebSocket parsers, [`parse_value`] is sans-I/O: it is handed
//! the bytes received so far and answers "need more" or "a value, and it
//! used this many bytes". And like them it trusts nothing it reads: Redis is
//! trusted less than the code that talks to it, since whoever can reach the
//! Redis port can write to it. A length is checked against [`Limits`]
//! before anything is allocated for it, and arrays nest at most
//! [`MAX_DEPTH`] deep.

use crate::handshake::Parse;
use std::fmt;

/// How deep arrays may nest: a pub/sub push is an array of bulk strings,
/// one level; nothing wschat asks for goes deeper.
pub const MAX_DEPTH: usize = 2;

/// The longest line (a simple string, an error, an integer, a length).
pub const MAX_LINE: usize = 1024;

/// What one reply may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string: a chat message and its envelope.
    pub max_bulk: usize,
    /// The most elements in one array.
    pub max_array: usize,
}

/// One RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: short text, no CR or LF in it.
    Simple(String),
    /// `-ERR ...`: the command failed, and why.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$5\r\nhello`: any bytes; `None` for the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*3 ...`: values; `None` for the null array `*-1`.
    Array(Option<Vec<Value>>),
}

/// A reply that breaks the protocol or a limit: the connection to Redis is
/// given up on, as a WebSocket peer that breaks a rule is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// The first byte is not one of `+ - : $ *`.
    UnknownType(u8),
    /// A line without its CRLF within [`MAX_LINE`] bytes, or not UTF-8.
    BadLine,
    /// A length or an integer that is not a number.
    BadNumber(String),
    /// A bulk string longer than [`Limits::max_bulk`].
    BulkTooLong(i64),
    /// An array longer than [`Limits::max_array`].
    ArrayTooLong(i64),
    /// Arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A bulk string whose payload is not followed by CRLF.
    MissingCrlf,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadLine => {
                write!(f, "a RESP line longer than {MAX_LINE} bytes or not UTF-8")
            }
            RespError::BadNumber(text) => write!(f, "{text:?} is not a number"),
            RespError::BulkTooLong(n) => write!(f, "a bulk string of {n} bytes is over the limit"),
            RespError::ArrayTooLong(n) => write!(f, "an array of {n} values is over the limit"),
            RespError::TooDeep => write!(f, "arrays nested deeper than {MAX_DEPTH}"),
            RespError::MissingCrlf => write!(f, "a bulk string not followed by CRLF"),
        }
    }
}

impl std::error::Error for RespError {}

/// A command as Redis reads it: an array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one value from the front of `buf`: [`Parse::Partial`] until it
/// has all arrived, then the value and how many bytes it used.
pub fn parse_value(buf: &[u8], limits: &Limits) -> Result<Parse<Value>, RespError> {
    parse_at_depth(buf, limits, 0)
}

fn parse_at_depth(buf: &[u8], limits: &Limits, depth: usize) -> Result<Parse<Value>, RespError> {
    let Some(&kind) = buf.first() else {
        return Ok(Parse::Partial);
    };
    let Some((line, mut used)) = read_line(&buf[1..])? else {
        return Ok(Parse::Partial);
    };
    used += 1; // the type byte
    let value = match kind {
        b'+' => Value::Simple(line.to_string()),
        b'-' => Value::Error(line.to_string()),
        b':' => Value::Integer(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                Value::Bulk(None)
            } else if len as u64 > limits.max_bulk as u64 {
                // Checked before anything is allocated for it.
                return Err(RespError::BulkTooLong(len));
            } else {
                let len = len as usize;
                let rest = &buf[used..];
                if rest.len() < len + 2 {
                    return Ok(Parse::Partial);
                }
                if &rest[len..len + 2] != b"\r\n" {
                    return Err(RespError::MissingCrlf);
                }
                used += len + 2;
                Value::Bulk(Some(rest[..len].to_vec()))
            }
        }
        b'*' => {
            let count = number(line)?;
            if count < 0 {
                Value::Array(None)
            } else if count as u64 > limits.max_array as u64 {
                return Err(RespError::ArrayTooLong(count));
            } else if depth + 1 >= MAX_DEPTH && count > 0 {
                return Err(RespError::TooDeep);
            } else {
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    match parse_at_depth(&buf[used..], limits, depth + 1)? {
                        Parse::Complete(value, n) => {
                            values.push(value);
                            used += n;
                        }
                        Parse::Partial => return Ok(Parse::Partial),
                    }
                }
                Value::Array(Some(values))
            }
        }
        other => return Err(RespError::UnknownType(other)),
    };
    Ok(Parse::Complete(value, used))
}

/// The text up to the first CRLF, and the bytes it used, CRLF included.
fn read_line(buf: &[u8]) -> Result<Option<(&str, usize)>, RespError> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = std::str::from_utf8(&buf[..end]).map_err(|_| RespError::BadLine)?;
            Ok(Some((line, end + 2)))
        }
        None if buf.len() >= MAX_LINE + 2 => Err(RespError::BadLine),
        None => Ok(None),
    }
}

fn number(text: &str) -> Result<i64, RespError> {
    text.parse()
        .map_err(|_| RespError::BadNumber(text.chars().take(40).collect()))
}

/// A message pushed to a subscriber: `*3 $7 message $CHANNEL $PAYLOAD`.
/// Returns the channel and the payload, or `None` for any other value
/// (such as the `subscribe` confirmation).
pub fn as_message(value: &Value) -> Option<(&[u8], &[u8])> {
    let Value::Array(Some(items)) = value else {
        return None;
    };
    match items.as_slice() {
        [
            Value::Bulk(Some(kind)),
            Value::Bulk(Some(channel)),
            Value::Bulk(Some(payload)),
        ] if kind == b"message" => Some((channel, payload)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 64,
        max_array: 4,
    };

    fn parse(bytes: &[u8]) -> Result<Parse<Value>, RespError> {
        parse_value(bytes, &LIMITS)
    }

    fn bulk(text: &str) -> Value {
        Value::Bulk(Some(text.as_bytes().to_vec()))
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(
            encode_command(&[b"PUBLISH", b"wschat", b"hello"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nwschat\r\n$5\r\nhello\r\n"
        );
        assert_eq!(encode_command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn every_type_of_reply() {
        let cases: [(&[u8], Value); 7] = [
            (b"+PONG\r\n", Value::Simple("PONG".into())),
            (b"-ERR unknown\r\n", Value::Error("ERR unknown".into())),
            (b":2\r\n", Value::Integer(2)),
            (b"$5\r\nhe\r\no\r\n", bulk("he\r\no")),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"*-1\r\n", Value::Array(None)),
            (
                b"*3\r\n$9\r\nsubscribe\r\n$6\r\nwschat\r\n:1\r\n",
                Value::Array(Some(vec![
                    bulk("subscribe"),
                    bulk("wschat"),
                    Value::Integer(1),
                ])),
            ),
        ];
        for (bytes, value) in cases {
            assert_eq!(parse(bytes), Ok(Parse::Complete(value, bytes.len())));
        }
    }

    #[test]
    fn any_split_gives_partial_then_the_same_value() {
        let push = b"*3\r\n$7\r\nmessage\r\n$6\r\nwschat\r\n$5\r\nhello\r\n:1\r\n";
        let whole = push.len() - 4; // the message, not the integer after it
        for cut in 0..whole {
            assert_eq!(parse(&push[..cut]), Ok(Parse::Partial), "cut at {cut}");
        }
        let Ok(Parse::Complete(value, used)) = parse(push) else {
            panic!()
        };
        assert_eq!(used, whole);
        assert_eq!(as_message(&value), Some((&b"wschat"[..], &b"hello"[..])));
    }

    #[test]
    fn hostile_replies_are_refused_before_allocating() {
        assert_eq!(
            parse(b"$9223372036854775807\r\n"),
            Err(RespError::BulkTooLong(i64::MAX))
        );
        assert_eq!(parse(b"$65\r\n"), Err(RespError::BulkTooLong(65)));
        assert_eq!(
            parse(b"*1000000000\r\n"),
            Err(RespError::ArrayTooLong(1_000_000_000))
        );
        assert_eq!(parse(b"*1\r\n*1\r\n:1\r\n"), Err(RespError::TooDeep));
        assert_eq!(parse(b"!3\r\n"), Err(RespError::UnknownType(b'!')));
        assert_eq!(parse(b"$x\r\n"), Err(RespError::BadNumber("x".into())));
        assert_eq!(parse(b":12a\r\n"), Err(RespError::BadNumber("12a".into())));
        assert_eq!(parse(b"$2\r\nhiXY"), Err(RespError::MissingCrlf));
        let endless = vec![b'+'; MAX_LINE + 3];
        assert_eq!(parse(&endless), Err(RespError::BadLine));
        assert_eq!(parse(b"+\xff\r\n"), Err(RespError::BadLine));
    }

    #[test]
    fn only_a_message_push_is_a_message() {
        let Ok(Parse::Complete(confirm, _)) =
            parse(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nwschat\r\n:1\r\n")
        else {
            panic!()
        };
        assert_eq!(as_message(&confirm), None);
        assert_eq!(as_message(&Value::Simple("PONG".into())), None);
    }
}
