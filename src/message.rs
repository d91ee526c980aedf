//! From frames to messages (RFC 6455 §5.4-§5.6): fragments, control frames,
//! UTF-8 and size limits.
//!
//! [`MessageReader`] is the reading half of the protocol, with no socket in
//! sight: it is handed whatever bytes arrived ([`MessageReader::read`]) and
//! yields an [`Event`] for each frame or message they complete. It keeps
//! everything it needs between calls, so a frame may arrive one byte at a
//! time or ten frames in one read, and the result is the same.
//!
//! Payload bytes are unmasked and checked as they arrive rather than when a
//! message ends. That is what lets it refuse an oversized message before
//! buffering it, and fail bad UTF-8 at the first byte that can never be valid.
//!
//! It only reads. What to do about a ping, a close or an error (answer,
//! close, fail) is decided one module later, in [`crate::session`].

use crate::close::{CloseFrame, parse_close_payload};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, Role, hex};
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The memory that all connections' unfinished messages may hold together
/// (`--max-buffered`), shared by every [`MessageReader`]. A reader takes
/// from it what a data frame's header announces, before it buffers a byte
/// of the payload, and gives it back when the message is complete or the
/// reader is dropped with its connection.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    taken: AtomicUsize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Budget {
        Budget {
            max,
            taken: AtomicUsize::new(0),
        }
    }

    /// How many bytes are taken right now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }

    /// Takes `bytes`, if that stays within the budget.
    fn take(&self, bytes: usize) -> bool {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                taken.checked_add(bytes).filter(|&after| after <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.taken.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// A whole data message (RFC 6455 §5.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text, guaranteed valid UTF-8.
    Text(String),
    /// Arbitrary bytes.
    Binary(Vec<u8>),
}

/// Something complete that the other side sent.
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

/// Where the reader is inside the current frame.
#[derive(Debug)]
enum FrameState {
    /// Collecting a header, which may arrive in pieces (at most
    /// [`MAX_HEADER_LEN`] bytes).
    Header {
        bytes: [u8; MAX_HEADER_LEN],
        len: usize,
    },
    /// Reading a data frame's payload into the message being collected.
    Data { header: FrameHeader, received: u64 },
    /// Reading a control frame's payload (at most 125 bytes, §5.5).
    Control {
        header: FrameHeader,
        payload: Vec<u8>,
    },
}

impl FrameState {
    fn new_header() -> FrameState {
        FrameState::Header {
            bytes: [0; MAX_HEADER_LEN],
            len: 0,
        }
    }
}

/// A data message whose fragments are being collected.
#[derive(Debug)]
struct InMessage {
    /// `Text` or `Binary`: the opcode of its first frame.
    opcode: OpCode,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// The reading half of a connection: bytes in, [`Event`]s out.
#[derive(Debug)]
pub struct MessageReader {
    /// The side we are, which decides whether frames must be masked (§5.1).
    role: Role,
    /// The largest message accepted, in bytes, after reassembly.
    max_message: usize,
    /// The memory all connections' unfinished messages share, if limited.
    budget: Option<Arc<Budget>>,
    /// What this reader has taken from the budget.
    taken: usize,
    frame: FrameState,
    /// The fragmented message in progress, if any (§5.4). Control frames
    /// may arrive between its fragments.
    message: Option<InMessage>,
    /// Names the other side in `trace` log lines.
    name: String,
}

impl MessageReader {
    /// A reader for `role`'s side of a connection to `name`, accepting
    /// messages of up to `max_message` bytes.
    pub fn new(role: Role, max_message: usize, name: &str) -> MessageReader {
        MessageReader {
            role,
            max_message,
            budget: None,
            taken: 0,
            frame: FrameState::new_header(),
            message: None,
            name: name.to_string(),
        }
    }

    /// Makes every data frame take what it announces from `budget` first
    /// (RFC 6455 §10.4: "implementations SHOULD impose a limit on frame
    /// sizes and the total message size after reassembly from multiple
    /// frames"; this is that limit for all connections together).
    pub fn with_budget(mut self, budget: Arc<Budget>) -> MessageReader {
        self.budget = Some(budget);
        self
    }

    /// The events that `bytes` complete, in order, as an iterator. Bytes
    /// that complete nothing yet are kept for the next call.
    ///
    /// An error ends the iteration: the connection must then fail with the
    /// error's close code (§7.1.7), and the reader must not be used again.
    pub fn read<'a>(&'a mut self, bytes: &'a [u8]) -> Events<'a> {
        Events {
            reader: self,
            bytes,
            failed: false,
        }
    }

    /// Consumes bytes from the front of `input` until an event is complete or
    /// the input runs out. Returns how many bytes were used, and the event if
    /// one was completed. [`MessageReader::read`] calls it in a loop.
    fn read_one(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), ProtocolError> {
        let mut used = 0;
        while used < input.len() {
            if let FrameState::Header { .. } = self.frame {
                used += self.read_header(&input[used..])?;
                if let FrameState::Header { .. } = self.frame {
                    break; // the input ended inside the header
                }
            }
            used += self.read_payload(&input[used..])?;
            if let Some(event) = self.finish_frame_if_complete()? {
                return Ok((used, Some(event)));
            }
        }
        Ok((used, None))
    }

    /// Gathers header bytes until they parse, then starts the frame.
    /// Returns how many bytes of `input` it used.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let FrameState::Header { bytes, len } = &mut self.frame else {
            unreachable!("bug: read_header outside a header");
        };
        let before = *len;
        let take = input.len().min(MAX_HEADER_LEN - before);
        bytes[before..before + take].copy_from_slice(&input[..take]);
        *len += take;
        match FrameHeader::parse(&bytes[..*len])? {
            None => Ok(take),
            Some((header, header_len)) => {
                self.start_frame(header)?;
                Ok(header_len - before)
            }
        }
    }

    /// Checks a new frame against the message in progress (§5.4) and the size
    /// limit, before any of its payload is stored.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        // §5.1: "The server MUST close the connection upon receiving a frame
        // that is not masked", and a client one that is.
        match (self.role.expects_masked_frames(), header.mask.is_some()) {
            (true, false) => return Err(ProtocolError::UnmaskedFrame),
            (false, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        self.frame = match header.opcode {
            op if op.is_control() => FrameState::Control {
                header,
                payload: Vec::new(),
            },
            OpCode::Continuation => {
                let message = self
                    .message
                    .as_ref()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                self.check_size(message.data.len(), header.payload_len)?;
                self.take_from_budget(header.payload_len)?;
                FrameState::Data {
                    header,
                    received: 0,
                }
            }
            opcode => {
                // §5.4: fragments of one message are not interleaved with
                // another message's.
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.check_size(0, header.payload_len)?;
                self.take_from_budget(header.payload_len)?;
                self.message = Some(InMessage {
                    opcode,
                    data: Vec::new(),
                    utf8: Utf8Validator::default(),
                });
                FrameState::Data {
                    header,
                    received: 0,
                }
            }
        };
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

    /// Takes `payload_len` bytes (already checked against `max_message`)
    /// from the budget, if there is one: nothing is buffered before that.
    fn take_from_budget(&mut self, payload_len: u64) -> Result<(), ProtocolError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let bytes = payload_len as usize; // at most max_message
        if !budget.take(bytes) {
            return Err(ProtocolError::OverBudget { max: budget.max });
        }
        self.taken += bytes;
        Ok(())
    }

    /// Gives back everything taken from the budget: the message is complete,
    /// or the connection is over (the session calls it then).
    pub fn give_back_budget(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.taken);
        }
        self.taken = 0;
    }

    /// Stores, unmasks and (for text) checks as much of the payload as
    /// `input` holds. Returns how many bytes it used.
    fn read_payload(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        match &mut self.frame {
            FrameState::Header { .. } => Ok(0),
            FrameState::Control { header, payload } => {
                let n = input.len().min(remaining(header, payload.len() as u64));
                append_unmasked(payload, &input[..n], header.mask);
                Ok(n)
            }
            FrameState::Data { header, received } => {
                let n = input.len().min(remaining(header, *received));
                let message = self
                    .message
                    .as_mut()
                    .expect("bug: a data frame is read only inside a message");
                let offset = *received as usize;
                *received += n as u64;
                let from = message.data.len();
                message.data.extend_from_slice(&input[..n]);
                if let Some(key) = header.mask {
                    apply_mask(&mut message.data[from..], key, offset);
                }
                // §8.1: fail as soon as the text can no longer become valid UTF-8.
                if message.opcode == OpCode::Text {
                    message.utf8.feed(&message.data)?;
                }
                Ok(n)
            }
        }
    }

    /// If the frame's payload has fully arrived, finishes the frame and
    /// returns the event it completes, if any (a non-final fragment
    /// completes none).
    fn finish_frame_if_complete(&mut self) -> Result<Option<Event>, ProtocolError> {
        let complete = match &self.frame {
            FrameState::Header { .. } => false,
            FrameState::Control { header, payload } => payload.len() as u64 == header.payload_len,
            FrameState::Data { header, received } => *received == header.payload_len,
        };
        if !complete {
            return Ok(None);
        }
        match std::mem::replace(&mut self.frame, FrameState::new_header()) {
            FrameState::Control { header, payload } => {
                self.trace(&header, &payload);
                Ok(Some(match header.opcode {
                    OpCode::Ping => Event::Ping(payload),
                    OpCode::Pong => Event::Pong(payload),
                    _ => Event::Close(parse_close_payload(&payload)?),
                }))
            }
            FrameState::Data { header, .. } => self.finish_data_frame(&header),
            FrameState::Header { .. } => unreachable!("bug: checked above"),
        }
    }

    /// A data frame is complete: if it was the last fragment (FIN), so is
    /// the message.
    fn finish_data_frame(&mut self, header: &FrameHeader) -> Result<Option<Event>, ProtocolError> {
        let message = self
            .message
            .as_ref()
            .expect("bug: a data frame is read only inside a message");
        let payload_len = header.payload_len as usize; // within max_message, checked
        self.trace(header, &message.data[message.data.len() - payload_len..]);
        if !header.fin {
            return Ok(None);
        }
        let message = self.message.take().expect("bug: checked above");
        self.give_back_budget();
        Ok(Some(Event::Message(match message.opcode {
            OpCode::Text => Message::Text(message.utf8.finish(message.data)?),
            _ => Message::Binary(message.data),
        })))
    }

    /// One annotated line per received frame, at `trace` level.
    fn trace(&self, header: &FrameHeader, payload: &[u8]) {
        let arrow = self.role.received_arrow();
        log::trace!(
            "{} {arrow} {header} payload={}",
            self.name,
            preview(payload)
        );
    }
}

impl Drop for MessageReader {
    fn drop(&mut self) {
        self.give_back_budget();
    }
}

/// The events that one call to [`MessageReader::read`] completes.
#[derive(Debug)]
pub struct Events<'a> {
    reader: &'a mut MessageReader,
    bytes: &'a [u8],
    failed: bool,
}

impl<'a> Events<'a> {
    /// The bytes not read yet: after the last event returned, or all that
    /// was handed in if none was.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }
}

impl Iterator for Events<'_> {
    type Item = Result<Event, ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.reader.read_one(self.bytes) {
            Ok((used, event)) => {
                self.bytes = &self.bytes[used..];
                event.map(Ok)
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// How many payload bytes of the frame are still to come, as a `usize`.
fn remaining(header: &FrameHeader, received: u64) -> usize {
    usize::try_from(header.payload_len - received).unwrap_or(usize::MAX)
}

/// Appends `bytes` to `target` and unmasks them there (if masked); the
/// control payload being collected starts at offset 0 of the frame.
fn append_unmasked(target: &mut Vec<u8>, bytes: &[u8], mask: Option<[u8; 4]>) {
    let from = target.len();
    target.extend_from_slice(bytes);
    if let Some(key) = mask {
        apply_mask(&mut target[from..], key, from);
    }
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

    fn reader_of(max_message: usize) -> MessageReader {
        MessageReader::new(Role::Server, max_message, "test")
    }

    fn receiver() -> MessageReader {
        reader_of(1 << 20)
    }

    /// Feeds `input` in pieces of `chunk` bytes; collects events until the
    /// first error.
    fn feed(
        rx: &mut MessageReader,
        input: &[u8],
        chunk: usize,
    ) -> Result<Vec<Event>, ProtocolError> {
        let mut events = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            for event in rx.read(piece) {
                events.push(event?);
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
            let mut rx = reader_of(2 << 20);
            let got = feed(&mut rx, &bytes, 4096);
            assert_eq!(
                got,
                Ok(vec![Event::Message(Message::Binary(payload))]),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_client_refuses_masked_frames_and_reads_unmasked_ones() {
        let mut rx = MessageReader::new(Role::Client, 1 << 20, "test");
        // §5.7: "A single-frame unmasked text message".
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(feed(&mut rx, &hello, 1), Ok(vec![text("Hello")]));
        let err = feed(&mut rx, &client_frame(true, OpCode::Text, b"hi"), 8).unwrap_err();
        assert_eq!(err, ProtocolError::MaskedFrame);
        assert_eq!(err.close_code(), 1002);
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
        let mut rx = reader_of(1000);
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
        let mut rx = reader_of(1000);
        let mut bytes = client_frame(false, OpCode::Binary, &[0; 600]);
        bytes.extend(client_frame(true, OpCode::Continuation, &[0; 401]));
        let err = feed(&mut rx, &bytes, bytes.len()).unwrap_err();
        assert_eq!(err.close_code(), 1009);
    }

    #[test]
    fn message_of_exactly_the_limit_is_accepted() {
        let mut rx = reader_of(1000);
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
        assert!(rx.message.is_none());
    }

    #[test]
    fn a_shared_budget_is_taken_on_the_header_and_given_back() {
        let budget = Arc::new(Budget::new(1000));
        let mut a = reader_of(1000).with_budget(Arc::clone(&budget));
        let mut b = reader_of(1000).with_budget(Arc::clone(&budget));
        let frame = client_frame(true, OpCode::Binary, &[5; 600]);
        // A's header takes 600 before any payload is buffered.
        assert_eq!(feed(&mut a, &frame[..8], 8), Ok(vec![]));
        assert_eq!(budget.taken(), 600);
        // B's would take the total past 1000: 1013, Try Again Later.
        let err = feed(&mut b, &frame[..8], 8).unwrap_err();
        assert_eq!(err, ProtocolError::OverBudget { max: 1000 });
        assert_eq!(err.close_code(), 1013);
        // A's message completes: its share goes back.
        assert_eq!(feed(&mut a, &frame[8..], 100).unwrap().len(), 1);
        assert_eq!(budget.taken(), 0);
        // A reader dropped with a message half read gives its share back.
        let mut c = reader_of(1000).with_budget(Arc::clone(&budget));
        assert_eq!(feed(&mut c, &frame[..20], 20), Ok(vec![]));
        assert_eq!(budget.taken(), 600);
        drop(c);
        assert_eq!(budget.taken(), 0);
    }

    #[test]
    fn iteration_stops_at_the_first_error() {
        let mut bytes = client_frame(true, OpCode::Text, b"ok");
        bytes.extend([0x83, 0x80, 0, 0, 0, 0]); // reserved opcode 0x3
        bytes.extend(client_frame(true, OpCode::Text, b"never"));
        let mut rx = receiver();
        let got: Vec<_> = rx.read(&bytes).collect();
        assert_eq!(
            got,
            vec![Ok(text("ok")), Err(ProtocolError::ReservedOpcode(3))]
        );
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
