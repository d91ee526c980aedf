//! Every protocol error, sent as raw bytes after a real handshake, is answered
//! with the exact close code RFC 6455 asks for, and then TCP is closed.

mod common;

use common::*;
use std::io::Write;

/// Sends `bytes` on a fresh connection and returns the close code received.
fn close_code_for(bytes: &[u8]) -> Option<u16> {
    let server = ServerProcess::start(&["--echo", "--max-message", "1000"]);
    let mut stream = raw_client(server.addr);
    stream.write_all(bytes).unwrap();
    let code = expect_close(&mut stream);
    // The server goes on serving others.
    let mut other = raw_client(server.addr);
    other
        .write_all(&client_frame(TEXT, b"still here", true))
        .unwrap();
    assert_eq!(read_frame(&mut other).unwrap().payload, b"still here");
    code
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn unmasked_client_frame_is_1002() {
    assert_eq!(
        close_code_for(&client_frame(TEXT, b"hi", false)),
        Some(1002)
    );
}

#[test]
fn rsv_bits_are_1002() {
    for rsv in [0x40, 0x20, 0x10, 0x70] {
        assert_eq!(
            close_code_for(&client_frame(TEXT | rsv, b"hi", true)),
            Some(1002)
        );
    }
}

#[test]
fn reserved_opcodes_are_1002() {
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        assert_eq!(
            close_code_for(&client_frame(0x80 | opcode, b"", true)),
            Some(1002)
        );
    }
}

#[test]
fn fragmented_control_frame_is_1002() {
    assert_eq!(
        close_code_for(&client_frame(0x09, b"ping", true)),
        Some(1002)
    );
}

#[test]
fn control_frame_over_125_bytes_is_1002() {
    assert_eq!(
        close_code_for(&client_frame(PING, &[b'x'; 126], true)),
        Some(1002)
    );
}

#[test]
fn continuation_without_start_is_1002() {
    assert_eq!(
        close_code_for(&client_frame(CONT_FIN, b"orphan", true)),
        Some(1002)
    );
}

#[test]
fn new_message_inside_a_fragmented_one_is_1002() {
    let bytes = concat(&[
        client_frame(TEXT_START, b"a", true),
        client_frame(TEXT, b"b", true),
    ]);
    assert_eq!(close_code_for(&bytes), Some(1002));
}

#[test]
fn non_minimal_length_is_1002() {
    // 5 bytes announced in the 16-bit form.
    let mut bytes = vec![BINARY, 0x80 | 126, 0, 5, 1, 2, 3, 4];
    bytes.extend_from_slice(b"abcde");
    assert_eq!(close_code_for(&bytes), Some(1002));
}

#[test]
fn invalid_utf8_is_1007() {
    assert_eq!(
        close_code_for(&client_frame(TEXT, b"bad \xff byte", true)),
        Some(1007)
    );
}

#[test]
fn invalid_utf8_fails_at_its_fragment_before_the_message_ends() {
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = raw_client(server.addr);
    stream
        .write_all(&client_frame(
            TEXT_START,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
            true,
        ))
        .unwrap();
    stream
        .write_all(&client_frame(CONT, b"\x90\x80\x80", true))
        .unwrap();
    // The final fragment is never sent: the close must come anyway.
    assert_eq!(expect_close(&mut stream), Some(1007));
}

#[test]
fn one_byte_close_payload_is_1002() {
    assert_eq!(
        close_code_for(&client_frame(CLOSE, &[0x03], true)),
        Some(1002)
    );
}

#[test]
fn invalid_close_codes_are_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let bytes = client_frame(CLOSE, &code.to_be_bytes(), true);
        assert_eq!(close_code_for(&bytes), Some(1002), "code {code}");
    }
}

#[test]
fn close_reason_not_utf8_is_1007() {
    let bytes = client_frame(CLOSE, &[0x03, 0xE8, b'b', 0xFF], true);
    assert_eq!(close_code_for(&bytes), Some(1007));
}

#[test]
fn valid_close_codes_are_echoed() {
    for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            close_code_for(&client_frame(CLOSE, &payload, true)),
            Some(code)
        );
    }
}

#[test]
fn empty_close_is_answered_with_an_empty_close() {
    assert_eq!(close_code_for(&client_frame(CLOSE, b"", true)), None);
}

#[test]
fn message_over_max_message_is_1009() {
    // Refused on the header alone: the payload is never sent.
    let header = &client_frame(BINARY, &[0; 1001], true)[..8];
    assert_eq!(close_code_for(header), Some(1009));
    // Reassembled fragments that add up past the limit.
    let bytes = concat(&[
        client_frame(BINARY_START, &[1; 600], true),
        client_frame(CONT_FIN, &[2; 401], true),
    ]);
    assert_eq!(close_code_for(&bytes), Some(1009));
}

#[test]
fn message_of_exactly_max_message_is_echoed() {
    let server = ServerProcess::start(&["--echo", "--max-message", "1000"]);
    let mut stream = raw_client(server.addr);
    stream
        .write_all(&client_frame(BINARY, &[9; 1000], true))
        .unwrap();
    assert_eq!(read_frame(&mut stream).unwrap().payload, vec![9; 1000]);
}

#[test]
fn protocol_error_is_logged_with_its_reason() {
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = raw_client(server.addr);
    stream.write_all(&client_frame(TEXT, b"hi", false)).unwrap();
    assert_eq!(expect_close(&mut stream), Some(1002));
    assert!(server.wait_for_log("failed with 1002: client frame is not masked"));
}
