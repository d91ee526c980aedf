//! Codec micro-benchmarks, no sockets: unmasking, and decoding frames into
//! messages, wschat against tungstenite on the same bytes.

use crate::Row;
use crate::client;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use wschat::message::{Event, MessageReader};

/// Runs each function (which returns how many units it processed) for a
/// while and returns units per second for each: the median of seven
/// samples after a warm-up. The functions take turns, one sample each, so
/// that a change in the machine's speed while they run (another process,
/// the CPU's clock) touches them all alike.
fn rates<'a>(sample: Duration, mut fs: Vec<Box<dyn FnMut() -> u64 + 'a>>) -> Vec<f64> {
    let warm = Instant::now();
    while warm.elapsed() < sample {
        for f in fs.iter_mut() {
            f();
        }
    }
    let mut samples = vec![Vec::new(); fs.len()];
    for _ in 0..7 {
        for (f, samples) in fs.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            let mut units = 0;
            while start.elapsed() < sample {
                units += f();
            }
            samples.push(units as f64 / start.elapsed().as_secs_f64());
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// The RFC's formula (§5.3), one byte at a time: the baseline that shows
/// what working on whole words buys. (tungstenite's own unmasking function
/// is private to it; its cost is part of its decode figures below.)
fn bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Bytes a decoder reads from, as if from a socket; what it writes is dropped.
struct Replay<'a> {
    data: &'a [u8],
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.data.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `count` masked client frames of `opcode`, each with a `size`-byte payload.
fn client_frames(opcode: u8, size: usize, count: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::with_capacity(count * (size + 14));
    for _ in 0..count {
        client::encode(opcode, &payload, &mut out);
    }
    out
}

/// Decodes all of `bytes` with wschat's `MessageReader`, handing it at most
/// `READ_BUFFER_SIZE` bytes at a time, as the server's reading loop does.
fn wschat_decode(rx: &mut MessageReader, bytes: &[u8]) -> u64 {
    let mut events = 0;
    for chunk in bytes.chunks(wschat::connection::READ_BUFFER_SIZE) {
        for event in rx.read(chunk) {
            let event = event.expect("valid frames");
            assert!(matches!(event, Event::Message(_)));
            black_box(event);
            events += 1;
        }
    }
    events
}

/// Decodes `count` messages from `bytes` with tungstenite, server role,
/// default configuration apart from the size limits.
fn tungstenite_decode(bytes: &[u8], count: u64) -> u64 {
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let mut ws = WebSocket::from_raw_socket(Replay { data: bytes }, Role::Server, Some(config));
    for _ in 0..count {
        let message = ws.read().expect("valid frames");
        assert!(matches!(message, Message::Text(_) | Message::Binary(_)));
        black_box(message);
    }
    count
}

pub fn run(quick: bool) -> Vec<Row> {
    let sample = Duration::from_millis(if quick { 40 } else { 200 });
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let gb = |bytes_per_s: f64| bytes_per_s / 1e9;
    let mut rows = Vec::new();

    for (label, size) in [("1 KiB", 1024usize), ("1 MiB", 1 << 20)] {
        // Enough calls per timing check that the clock is not what is measured.
        let calls = ((1 << 20) / size).max(1) as u64;
        let unmask = |f: fn(&mut [u8], [u8; 4])| -> Box<dyn FnMut() -> u64> {
            let mut buf = vec![0x5au8; size];
            Box::new(move || {
                for _ in 0..calls {
                    f(black_box(&mut buf), key);
                }
                calls * size as u64
            })
        };
        let measured = rates(
            sample,
            vec![
                unmask(|b, k| wschat::mask::apply_mask(b, k, 0)),
                unmask(bytewise),
                // A payload arrives in pieces, one per read, and wschat
                // unmasks each piece as it comes, so a piece may start
                // anywhere in the key's cycle. (tungstenite unmasks whole
                // frames only.)
                unmask(|b, k| wschat::mask::apply_mask(b, k, 3)),
            ],
        );
        let [wschat, bytewise, offset] = [0, 1, 2].map(|i| gb(measured[i]));
        rows.push(Row::new(
            format!("unmask {label} (GB/s)"),
            wschat,
            f64::NAN,
            true,
        ));
        rows.push(Row::new(
            format!("unmask {label}, piece at payload offset 3 (GB/s)"),
            offset,
            f64::NAN,
            true,
        ));
        rows.push(Row::new(
            format!("unmask {label}, byte-at-a-time baseline (GB/s)"),
            bytewise,
            f64::NAN,
            true,
        ));
    }

    // Small frames: 64-byte text messages, as in the echo test.
    let [wschat, tungstenite] = decode_rates(sample, client::TEXT, 64, 10_000);
    rows.push(Row::new(
        "decode 64 B text frames (M frames/s)",
        wschat / 1e6,
        tungstenite / 1e6,
        true,
    ));
    // Large frames: 1 MiB binary messages.
    let [wschat, tungstenite] = decode_rates(sample, client::BINARY, 1 << 20, 16);
    let per_message = (1u64 << 20) as f64;
    rows.push(Row::new(
        "decode 1 MiB binary frames (GB/s)",
        wschat * per_message / 1e9,
        tungstenite * per_message / 1e9,
        true,
    ));
    rows
}

/// Messages decoded per second by wschat and by tungstenite, from `count`
/// masked client frames of `size` bytes each.
fn decode_rates(sample: Duration, first_byte: u8, size: usize, count: usize) -> [f64; 2] {
    let bytes = client_frames(first_byte, size, count);
    let mut rx = MessageReader::new(
        wschat::frame::Role::Server,
        (size * count).max(1 << 20),
        "bench",
    );
    let measured = rates(
        sample,
        vec![
            Box::new(|| wschat_decode(&mut rx, &bytes)),
            Box::new(|| tungstenite_decode(&bytes, count as u64)),
        ],
    );
    [measured[0], measured[1]]
}
