//! The load generator's side of the wire: a minimal WebSocket client.
//!
//! It is written here, independently of both servers, so that neither server
//! is measured with its own codec on the other end. It does only what the
//! benchmarks need: the opening handshake, masked client frames (RFC 6455
//! §5.3) and parsing the server's unmasked frames.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The masking key of every frame the load generator sends. A real client
/// picks a fresh random key per frame (§5.3); the servers cannot tell.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;

/// Connects and completes the opening handshake (§4.1). Returns the
/// blocking stream (with TCP_NODELAY, as both servers set on their side)
/// and any bytes that arrived after the `101` response.
pub fn connect(addr: SocketAddr) -> io::Result<(TcpStream, Vec<u8>)> {
    handshake(TcpStream::connect(addr)?, addr)
}

/// Like [`connect`], with a receive buffer of a few kilobytes: a client
/// that never reads blocks the server's writes to it almost at once.
pub fn connect_small_buffer(addr: SocketAddr) -> io::Result<(TcpStream, Vec<u8>)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect(&addr.into())?;
    handshake(socket.into(), addr)
}

fn handshake(mut stream: TcpStream, addr: SocketAddr) -> io::Result<(TcpStream, Vec<u8>)> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("closed during the handshake"));
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    if !response.starts_with(b"HTTP/1.1 101") {
        let head = String::from_utf8_lossy(&response[..end]);
        return Err(io::Error::other(format!("handshake refused: {head}")));
    }
    stream.set_read_timeout(None)?;
    Ok((stream, response.split_off(end)))
}

/// Appends one final, masked client frame.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&KEY);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, byte) in out[start..].iter_mut().enumerate() {
        *byte ^= KEY[i & 3];
    }
}

/// A server frame at the start of `buf`, if it has arrived whole: its
/// opcode, where its payload starts, and its total length.
pub fn parse(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (header_len, len) = parse_header(buf)?;
    let total = header_len + len as usize;
    (buf.len() >= total).then_some((buf[0] & 0x0F, header_len, total))
}

/// A server frame header at the start of `buf`: its length and the payload length.
pub fn parse_header(buf: &[u8]) -> Option<(usize, u64)> {
    let len7 = *buf.get(1)? & 0x7F;
    match len7 {
        126 => Some((
            4,
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
        )),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some((10, u64::from_be_bytes(bytes)))
        }
        n => Some((2, u64::from(n))),
    }
}

/// A 64-byte text payload that carries its send time and sequence number,
/// so whoever receives it (echoed, or prefixed with `ID<port>: `) can work
/// out its latency.
pub fn stamped_payload(sent_ns: u64, seq: u64) -> [u8; 64] {
    let mut payload = [b'.'; 64];
    let text = format!("{sent_ns:020} {seq:020} ");
    payload[..text.len()].copy_from_slice(text.as_bytes());
    payload
}

/// Reads back what [`stamped_payload`] wrote, from a text payload that may
/// have a chat prefix (`ID54321: `) in front of it.
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let body = match payload.iter().position(|&b| b == b':') {
        Some(colon) if colon < 16 => &payload[colon + 2..],
        _ => payload,
    };
    let sent = std::str::from_utf8(body.get(..20)?).ok()?.parse().ok()?;
    let seq = std::str::from_utf8(body.get(21..41)?).ok()?.parse().ok()?;
    Some((sent, seq))
}
