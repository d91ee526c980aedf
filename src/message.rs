//! From frames to messages (RFC 6455 §5.4-§5.6): fragments, control frames,
//! UTF-8 and size limits.
//!
//! [`Receiver`] is the server's reading half of the protocol, with no socket
//! in sight: it is handed whatever bytes arrived ([`Receiver::receive`]) and
//! answers with how many it used and, when one is complete, an [`Event`]. It
//! keeps everything it needs between calls, so a frame may arrive one byte at
//! a time or ten frames in one read, and the result is the same.
//!
//! Payload bytes are unmasked and checked as they arrive rather than when a
//! message ends. That is what lets it refuse an oversized message before
//! buffering it, and fail bad UTF-8 at the first byte that can never be valid.

use crate::close::{CloseFrame, parse_close_payload};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, hex};
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;

/// A whole data message (RFC 6455 §5.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text, guaranteed valid UTF-8.
    Text(String),
    /// Arbitrary bytes.
    Binary(Vec<u8>),
}

/// Something complete that the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A data message, reassembled from all its fragments.
    Message(Message),
    /// A ping (§5.5.2): "MUST send a Pong frame in response" with the same payload.
    Ping(Vec<u8>),
    /// A pong (§5.5.3), an answer to our ping or an unsolicited heartbeat.
    Pong(Vec<u8>),
    /// A close frame (§5.5.1), with its code and reason if it had any.
    Close(Option<CloseFrame>),
}

/// The frame whose payload is being read.
#[derive(Debug)]
struct InFrame {
    header: FrameHeader,
    /// Payload bytes received so far.
    received: u64,
    /// Where this frame's payload starts in its buffer.
    start: usize,
}

/// A data message whose fragments are being collected.
#[derive(Debug)]
struct InMessage {
    /// `Text` or `Binary`: the opcode of its first frame.
    opcode: OpCode,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// The server's reading half of a connection: bytes in, [`Event`]s out.
#[derive(Debug)]
pub struct Receiver {
    /// The largest message accepted, in bytes, after reassembly.
    max_message: usize,
    /// A header that has arrived only in part.
    header_buf: [u8; MAX_HEADER_LEN],
    header_len: usize,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    /// Names the client in `trace` log lines.
    peer: String,
}

impl Receiver {
    /// A receiver for the client `peer` that accepts messages of up to
    /// `max_message` bytes.
    pub fn new(max_message: usize, peer: &str) -> Receiver {
        Receiver {
            max_message,
            header_buf: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
            peer: peer.to_string(),
        }
    }

    /// Consumes bytes from the front of `input` until an event is complete or
    /// the input runs out. Returns how many bytes were used, and the event if
    /// one was completed; call again with the rest of the input.
    ///
    /// An error means the connection must fail with the error's close code;
    /// the receiver must not be used after that.
    pub fn receive(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), ProtocolError> {
        let mut used = 0;
        while used < input.len() {
            if self.frame.is_none() {
                let (n, header) = self.read_header(&input[used..])?;
                used += n;
                match header {
                    Some(header) => self.start_frame(header)?,
                    None => break,
                }
            }
            used += self.read_payload(&input[used..])?;
            if self.frame_is_complete()
                && let Some(event) = self.finish_frame()?
            {
                return Ok((used, Some(event)));
            }
        }
        Ok((used, None))
    }

    fn frame_is_complete(&self) -> bool {
        self.frame
            .as_ref()
            .is_some_and(|f| f.received == f.header.payload_len)
    }

    /// Gathers header bytes (at most [`MAX_HEADER_LEN`]) until they parse.
    fn read_header(&mut self, input: &[u8]) -> Result<(usize, Option<FrameHeader>), ProtocolError> {
        let before = self.header_len;
        let take = input.len().min(MAX_HEADER_LEN - before);
        self.header_buf[before..before + take].copy_from_slice(&input[..take]);
        self.header_len += take;
        match FrameHeader::parse(&self.header_buf[..self.header_len])? {
            None => Ok((take, None)),
            Some((header, len)) => {
                self.header_len = 0;
                Ok((len - before, Some(header)))
            }
        }
    }

    /// Checks a new frame against the message in progress (§5.4) and the size
    /// limit, before any of its payload is stored.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        // §5.1: "The server MUST close the connection upon receiving a frame
        // that is not masked."
        if header.mask.is_none() {
            return Err(ProtocolError::UnmaskedFrame);
        }
        let start = match header.opcode {
            op if op.is_control() => {
                self.control.clear();
                0
            }
            OpCode::Continuation => {
                let message = self
                    .message
                    .as_ref()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                self.check_size(message.data.len(), header.payload_len)?;
                message.data.len()
            }
            opcode => {
                // §5.4: fragments of one message are not interleaved with
                // another message's.
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.check_size(0, header.payload_len)?;
                self.message = Some(InMessage {
                    opcode,
                    data: Vec::new(),
                    utf8: Utf8Validator::default(),
                });
                0
            }
        };
        self.frame = Some(InFrame {
            header,
            received: 0,
            start,
        });
        Ok(())
    }

    /// Refuses a frame that would take the message past `max_message`,
    /// judged on its declared length alone: nothing is allocated for it.
    fn check_size(&self, buffered: usize, payload_len: u64) -> Result<(), ProtocolError> {
        let size = buffered as u64 + payload_len;
        if size > self.max_message as u64 {
            return Err(ProtocolError::MessageTooBig {
                size,
                max: self.max_message,
            });
        }
        Ok(())
    }

    /// Stores, unmasks and (for text) checks as much of the payload as `input` holds.
    fn read_payload(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(0);
        };
        let wanted = frame.header.payload_len - frame.received;
        let n = input
            .len()
            .min(usize::try_from(wanted).unwrap_or(usize::MAX));
        let key = frame.header.mask.unwrap_or_default();
        let offset = frame.received as usize;
        frame.received += n as u64;
        if frame.header.opcode.is_control() {
            append_unmasked(&mut self.control, &input[..n], key, offset);
        } else if let Some(message) = self.message.as_mut() {
            let frame_end = frame.start + payload_len(&frame.header);
            reserve_up_to(&mut message.data, n, frame_end);
            append_unmasked(&mut message.data, &input[..n], key, offset);
            // §8.1: fail as soon as the text can no longer become valid UTF-8.
            if message.opcode == OpCode::Text {
                message.utf8.feed(&message.data)?;
            }
        }
        Ok(n)
    }

    /// Handles a frame whose payload has fully arrived.
    fn finish_frame(&mut self) -> Result<Option<Event>, ProtocolError> {
        let Some(frame) = self.frame.take() else {
            return Ok(None);
        };
        let header = frame.header;
        if header.opcode.is_control() {
            self.trace(&header, &self.control);
            let payload = std::mem::take(&mut self.control);
            return Ok(Some(match header.opcode {
                OpCode::Ping => Event::Ping(payload),
                OpCode::Pong => Event::Pong(payload),
                _ => Event::Close(parse_close_payload(&payload)?),
            }));
        }
        let Some(message) = self.message.as_ref() else {
            return Ok(None);
        };
        self.trace(&header, &message.data[frame.start..]);
        if !header.fin {
            return Ok(None);
        }
        let Some(mut message) = self.message.take() else {
            return Ok(None);
        };
        if message.opcode == OpCode::Binary {
            return Ok(Some(Event::Message(Message::Binary(message.data))));
        }
        message.utf8.finish(&message.data)?;
        let text = String::from_utf8(message.data).map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Some(Event::Message(Message::Text(text))))
    }

    /// One annotated line per received frame, at `trace` level.
    fn trace(&self, header: &FrameHeader, payload: &[u8]) {
        log::trace!("{} -> {header} payload={}", self.peer, preview(payload));
    }
}

/// A frame's declared payload length, which [`Receiver::check_size`] has
/// already held against `max_message`.
fn payload_len(header: &FrameHeader) -> usize {
    usize::try_from(header.payload_len).unwrap_or(usize::MAX)
}

/// Makes room in `buffer` for `more` bytes: doubles its capacity, as a `Vec`
/// does, but never past `limit`, where the frame being read ends.
///
/// Plain doubling overshoots. A 16 MiB message read in pieces would end in
/// a 32 MiB buffer, too big for glibc's allocator to keep for reuse, so
/// every such message would get fresh memory from the kernel, each page
/// faulted in and zeroed. Capped, the buffer ends exactly as big as the
/// message. It still only grows as bytes arrive: a header alone, however
/// long the payload it announces, allocates nothing.
fn reserve_up_to(buffer: &mut Vec<u8>, more: usize, limit: usize) {
    let needed = buffer.len() + more;
    if needed > buffer.capacity() {
        let target = buffer.capacity().saturating_mul(2).min(limit).max(needed);
        buffer.reserve_exact(target - buffer.len());
    }
}

/// Appends `bytes` to `target` and unmasks them there; `offset` is where
/// they start in the frame's payload.
fn append_unmasked(target: &mut Vec<u8>, bytes: &[u8], key: [u8; 4], offset: usize) {
    let from = target.len();
    target.extend_from_slice(bytes);
    apply_mask(&mut target[from..], key, offset);
}

/// The first 16 bytes of a payload in hex, for the `trace` log.
pub fn preview(payload: &[u8]) -> String {
    let shown = &payload[..payload.len().min(16)];
    let more = if payload.len() > 16 { " …" } else { "" };
    format!("[{}{more}]", hex(shown, " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::close_payload;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask: Some(KEY),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], KEY, 0);
        out
    }

    fn receiver() -> Receiver {
        Receiver::new(1 << 20, "test")
    }

    /// Feeds `input` in pieces of `chunk` bytes; collects events until the
    /// first error.
    fn feed(rx: &mut Receiver, input: &[u8], chunk: usize) -> Result<Vec<Event>, ProtocolError> {
        let mut events = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (used, event) = rx.receive(rest)?;
                assert!(used > 0 || event.is_some(), "no progress");
                events.extend(event);
                rest = &rest[used..];
            }
        }
        Ok(events)
    }

    fn events(input: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        feed(&mut receiver(), input, input.len())
    }

    fn text(s: &str) -> Event {
        Event::Message(Message::Text(s.to_string()))
    }

    #[test]
    fn rfc_masked_hello_is_a_text_message() {
        // §5.7: "A single-frame masked text message".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(events(&bytes), Ok(vec![text("Hello")]));
    }

    #[test]
    fn frame_split_into_single_bytes() {
        let bytes = client_frame(true, OpCode::Text, "split into single bytes".as_bytes());
        let got = feed(&mut receiver(), &bytes, 1);
        assert_eq!(got, Ok(vec![text("split into single bytes")]));
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut bytes = client_frame(true, OpCode::Text, b"one");
        bytes.extend(client_frame(true, OpCode::Binary, &[2, 2]));
        bytes.extend(client_frame(true, OpCode::Ping, b"p"));
        bytes.extend(client_frame(true, OpCode::Text, b""));
        assert_eq!(
            events(&bytes),
            Ok(vec![
                text("one"),
                Event::Message(Message::Binary(vec![2, 2])),
                Event::Ping(b"p".to_vec()),
                text(""),
            ])
        );
    }

    #[test]
    fn payload_lengths_0_125_126_65535_65536_and_over_1_mib() {
        for len in [0, 125, 126, 65535, 65536, (1 << 20) + 1] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = client_frame(true, OpCode::Binary, &payload);
            let mut rx = Receiver::new(2 << 20, "test");
            let got = feed(&mut rx, &bytes, 4096);
            assert_eq!(
                got,
                Ok(vec![Event::Message(Message::Binary(payload))]),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_large_message_ends_in_a_buffer_of_its_own_size() {
        let len = (1 << 20) + 1;
        let bytes = client_frame(true, OpCode::Binary, &vec![1; len]);
        let mut rx = Receiver::new(2 << 20, "test");
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let piece = &rest[..rest.len().min(1000)];
            let (used, event) = rx.receive(piece).unwrap();
            rest = &rest[used..];
            if let Some(Event::Message(Message::Binary(data))) = event {
                assert_eq!((data.len(), data.capacity()), (len, len));
                return;
            }
        }
        panic!("no message");
    }

    #[test]
    fn unmasked_client_frame_is_1002() {
        let err = events(&[0x81, 0x02, b'h', b'i']).unwrap_err();
        assert_eq!(err, ProtocolError::UnmaskedFrame);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn fragments_are_reassembled_with_control_frames_between() {
        let mut bytes = client_frame(false, OpCode::Text, b"frag");
        bytes.extend(client_frame(true, OpCode::Ping, b"ping"));
        bytes.extend(client_frame(false, OpCode::Continuation, b"men"));
        bytes.extend(client_frame(true, OpCode::Pong, b""));
        bytes.extend(client_frame(true, OpCode::Continuation, b"ted"));
        for chunk in [1, 3, bytes.len()] {
            assert_eq!(
                feed(&mut receiver(), &bytes, chunk),
                Ok(vec![
                    Event::Ping(b"ping".to_vec()),
                    Event::Pong(vec![]),
                    text("fragmented")
                ])
            );
        }
    }

    #[test]
    fn continuation_without_a_start_is_1002() {
        let err = events(&client_frame(true, OpCode::Continuation, b"x")).unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedContinuation);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_1002() {
        let mut bytes = client_frame(false, OpCode::Binary, b"a");
        bytes.extend(client_frame(true, OpCode::Text, b"b"));
        assert_eq!(events(&bytes), Err(ProtocolError::ExpectedContinuation));
    }

    #[test]
    fn utf8_cut_inside_a_character_across_fragments_is_valid() {
        let word = "κόσμε".as_bytes();
        let mut bytes = client_frame(false, OpCode::Text, &word[..1]);
        bytes.extend(client_frame(false, OpCode::Continuation, &word[1..4]));
        bytes.extend(client_frame(true, OpCode::Continuation, &word[4..]));
        assert_eq!(events(&bytes), Ok(vec![text("κόσμε")]));
    }

    #[test]
    fn utf8_that_can_never_be_valid_fails_at_that_fragment() {
        // The first fragment ends in 0xF4, a valid start; the second begins
        // with 0x90, which makes a code point above U+10FFFF. The third
        // fragment is never read.
        let mut rx = receiver();
        let first = client_frame(
            false,
            OpCode::Text,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
        );
        assert_eq!(feed(&mut rx, &first, first.len()), Ok(vec![]));
        let second = client_frame(false, OpCode::Continuation, b"\x90\x80\x80");
        assert_eq!(
            feed(&mut rx, &second, second.len()),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn invalid_utf8_fails_mid_frame_before_the_frame_ends() {
        let bytes = client_frame(true, OpCode::Text, b"abc\xffdef");
        let mut rx = receiver();
        // Header (6 bytes) and "abc" are fine; the 0xFF byte fails at once.
        assert_eq!(feed(&mut rx, &bytes[..9], 9), Ok(vec![]));
        assert_eq!(
            feed(&mut rx, &bytes[9..10], 1),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn text_ending_inside_a_character_is_1007() {
        let err = events(&client_frame(true, OpCode::Text, b"abc\xe2\x82")).unwrap_err();
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn message_over_the_limit_is_refused_on_its_header() {
        let mut rx = Receiver::new(1000, "test");
        // Only the header of a frame that declares 1001 bytes: refused at once.
        let header = &client_frame(true, OpCode::Binary, &[0; 1001])[..8];
        let err = feed(&mut rx, header, header.len()).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::MessageTooBig {
                size: 1001,
                max: 1000
            }
        );
        assert_eq!(err.close_code(), 1009);
    }

    #[test]
    fn reassembled_message_over_the_limit_is_1009() {
        let mut rx = Receiver::new(1000, "test");
        let mut bytes = client_frame(false, OpCode::Binary, &[0; 600]);
        bytes.extend(client_frame(true, OpCode::Continuation, &[0; 401]));
        let err = feed(&mut rx, &bytes, bytes.len()).unwrap_err();
        assert_eq!(err.close_code(), 1009);
    }

    #[test]
    fn message_of_exactly_the_limit_is_accepted() {
        let mut rx = Receiver::new(1000, "test");
        let bytes = client_frame(true, OpCode::Binary, &[7; 1000]);
        assert_eq!(
            feed(&mut rx, &bytes, 100),
            Ok(vec![Event::Message(Message::Binary(vec![7; 1000]))])
        );
    }

    #[test]
    fn huge_declared_length_allocates_nothing() {
        let mut rx = receiver();
        let bytes = [
            0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
        ];
        assert!(matches!(
            events(&bytes),
            Err(ProtocolError::MessageTooBig { .. })
        ));
        assert!(feed(&mut rx, &bytes, 1).is_err());
        assert_eq!(rx.control.capacity(), 0);
    }

    #[test]
    fn close_frames_are_parsed() {
        let bytes = client_frame(true, OpCode::Close, &close_payload(1000, "bye"));
        let expected = CloseFrame {
            code: 1000,
            reason: "bye".into(),
        };
        assert_eq!(events(&bytes), Ok(vec![Event::Close(Some(expected))]));
        assert_eq!(
            events(&client_frame(true, OpCode::Close, b"")),
            Ok(vec![Event::Close(None)])
        );
        let err = events(&client_frame(true, OpCode::Close, &[0x03, 0xe8, 0xff])).unwrap_err();
        assert_eq!(err.close_code(), 1007);
        let err = events(&client_frame(true, OpCode::Close, &close_payload(1005, ""))).unwrap_err();
        assert_eq!(err.close_code(), 1002);
        let err = events(&client_frame(true, OpCode::Close, &[0x03])).unwrap_err();
        assert_eq!(err.close_code(), 1002);
    }
}
