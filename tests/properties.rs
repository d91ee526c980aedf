//! Property tests: arbitrary bytes, split arbitrarily, fed to the handshake
//! parser, the frame header parser and the message receiver. None may panic,
//! the way input is split must never change the result, and every header
//! that parses must encode back to the same bytes.

use proptest::prelude::*;
use wschat::error::ProtocolError;
use wschat::frame::Role;
use wschat::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use wschat::handshake::{Parse, parse_request};
use wschat::mask::apply_mask;
use wschat::message::{Event, MessageReader};

/// Enough cases to matter, few enough to run in seconds in a debug build.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Feeds `input` to a fresh receiver in pieces cut at `cuts`; returns the
/// events up to the first error, and the error.
fn receive_split(input: &[u8], cuts: &[usize], max: usize) -> (Vec<Event>, Option<ProtocolError>) {
    let mut reader = MessageReader::new(Role::Server, max, "prop");
    let mut events = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    points.dedup();
    for piece in points.windows(2).map(|w| &input[w[0]..w[1]]) {
        for event in reader.read(piece) {
            match event {
                Ok(event) => events.push(event),
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

/// A client frame built from its parts (masked with `key`).
fn masked_frame(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader::parse(&[first, 0])
        .ok()
        .flatten()
        .map(|(h, _)| h)
        .unwrap_or(FrameHeader::server(OpCode::Binary, 0));
    let header = FrameHeader {
        mask: Some(key),
        payload_len: payload.len() as u64,
        ..header
    };
    let mut out = Vec::new();
    header.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out
}

/// One plausible frame: any first byte (valid or not), any key, a payload
/// that is sometimes text.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    let first = prop_oneof![
        Just(0x81u8),
        Just(0x01),
        Just(0x80),
        Just(0x00),
        Just(0x82),
        Just(0x89),
        Just(0x8A),
        Just(0x88),
        any::<u8>(),
    ];
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        ".{0,20}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 120..300),
    ];
    (first, any::<[u8; 4]>(), payload).prop_map(|(f, k, p)| masked_frame(f, k, &p))
}

const REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

proptest! {
    #![proptest_config(config(20_000))]

    #[test]
    fn handshake_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_request(&bytes);
    }

    #[test]
    fn handshake_parser_never_panics_on_near_requests(
        at in 0..REQUEST.len(),
        byte in any::<u8>(),
        cut in 0..REQUEST.len(),
    ) {
        // A real request with one byte changed, and cut short.
        let mut bytes = REQUEST.as_bytes().to_vec();
        bytes[at] = byte;
        let _ = parse_request(&bytes);
        let _ = parse_request(&bytes[..cut]);
    }

    #[test]
    fn frame_header_parser_never_panics_and_round_trips(
        bytes in prop::collection::vec(any::<u8>(), 0..(2 * MAX_HEADER_LEN)),
    ) {
        if let Ok(Some((header, len))) = FrameHeader::parse(&bytes) {
            prop_assert!(len <= MAX_HEADER_LEN && len <= bytes.len());
            let mut encoded = Vec::new();
            header.encode(&mut encoded);
            prop_assert_eq!(&encoded[..], &bytes[..len]);
        }
    }

    #[test]
    fn receiver_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let _ = receive_split(&bytes, &cuts, 256);
    }
}

proptest! {
    #![proptest_config(config(5_000))]

    #[test]
    fn how_input_is_split_never_changes_the_result(
        frames in prop::collection::vec(any_frame(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let stream = frames.concat();
        let whole = receive_split(&stream, &[], 1 << 16);
        let split = receive_split(&stream, &cuts, 1 << 16);
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(&whole, &receive_split(&stream, &bytewise, 1 << 16));
    }

    #[test]
    fn accepted_frames_re_encode_to_the_same_bytes(frame in any_frame()) {
        // Whatever header the receiver accepted, the codec writes it back
        // exactly as it came.
        if let Ok(Some((header, len))) = FrameHeader::parse(&frame) {
            let mut encoded = Vec::new();
            header.encode(&mut encoded);
            prop_assert_eq!(&encoded[..], &frame[..len]);
        }
    }

    #[test]
    fn valid_text_in_any_fragments_arrives_whole(
        text in ".{0,60}",
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        key in any::<[u8; 4]>(),
    ) {
        // Fragment the text at arbitrary byte offsets, even inside characters.
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.extend([0, bytes.len()]);
        points.sort_unstable();
        points.dedup();
        let pieces: Vec<&[u8]> = if points.len() < 2 {
            vec![bytes]
        } else {
            points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
        };
        let mut stream = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 { 0x1 } else { 0x0 };
            let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
            stream.extend(masked_frame(fin | opcode, key, piece));
        }
        let (events, error) = receive_split(&stream, &[], 1 << 16);
        prop_assert_eq!(error, None);
        prop_assert_eq!(events, vec![Event::Message(wschat::message::Message::Text(text))]);
    }
}

#[test]
fn request_parses_the_same_at_every_split() {
    for cut in 0..REQUEST.len() {
        assert_eq!(
            parse_request(&REQUEST.as_bytes()[..cut]),
            Ok(Parse::Partial)
        );
    }
    assert!(matches!(
        parse_request(REQUEST.as_bytes()),
        Ok(Parse::Complete(_, n)) if n == REQUEST.len()
    ));
}
