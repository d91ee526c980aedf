//! `--redis`: one chat room across several wschat processes, with a real
//! `redis-server` of each test's own, killed and restarted by its PID.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Run by `run_tests` (`harness = false` in Cargo.toml), which lists a test
/// that cannot run here as SKIPPED, with why.
fn main() -> std::process::ExitCode {
    run_tests(&[
        (
            "three_processes_one_room_every_message_once_in_one_order",
            three_processes_one_room_every_message_once_in_one_order,
        ),
        (
            "without_redis_each_process_chats_alone_then_the_room_comes_back",
            without_redis_each_process_chats_alone_then_the_room_comes_back,
        ),
        (
            "no_message_is_delivered_twice_when_redis_dies_mid_burst",
            no_message_is_delivered_twice_when_redis_dies_mid_burst,
        ),
        (
            "a_subscriber_dropped_by_redis_for_being_slow_comes_back",
            a_subscriber_dropped_by_redis_for_being_slow_comes_back,
        ),
        (
            "redis_unreachable_at_start_or_a_bad_url_exits_1",
            redis_unreachable_at_start_or_a_bad_url_exits_1,
        ),
        ("echo_mode_ignores_redis", echo_mode_ignores_redis),
        (
            "a_hostile_redis_is_given_up_on_not_believed",
            a_hostile_redis_is_given_up_on_not_believed,
        ),
        (
            "a_stalled_redis_does_not_let_memory_grow",
            a_stalled_redis_does_not_let_memory_grow,
        ),
    ])
}

fn send_text(stream: &mut TcpStream, text: &str) {
    stream
        .write_all(&client_frame(TEXT, text.as_bytes(), true))
        .unwrap();
}

/// Reads text messages until `n` have arrived (or 15 s pass).
fn read_texts(stream: &mut TcpStream, n: usize) -> Vec<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut texts = Vec::new();
    while texts.len() < n {
        let frame = read_frame(stream).expect("a message");
        assert_eq!(frame.first_byte, TEXT, "{frame:?}");
        texts.push(String::from_utf8(frame.payload).unwrap());
    }
    texts
}

/// Whatever text arrives within `wait`.
fn texts_within(stream: &mut TcpStream, wait: Duration) -> Vec<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut texts = Vec::new();
    while let Ok(frame) = read_frame(stream) {
        texts.push(String::from_utf8_lossy(&frame.payload).into_owned());
    }
    texts
}

fn wschat_on(redis: &RedisProcess) -> ServerProcess {
    ServerProcess::start(&["--redis", &redis.url()])
}

/// Two processes on `redis`; two clients on the first, one on the second.
fn two_processes(
    redis: &RedisProcess,
) -> (
    ServerProcess,
    ServerProcess,
    TcpStream,
    TcpStream,
    TcpStream,
) {
    let first = wschat_on(redis);
    let second = wschat_on(redis);
    let a = joined(&first, 1);
    let a2 = joined(&first, 2);
    let b = joined(&second, 1);
    (first, second, a, a2, b)
}

/// A client joined and known to the server (so it receives what follows).
fn joined(server: &ServerProcess, count: usize) -> TcpStream {
    let client = raw_client(server.addr);
    let needle = format!(
        "connected ({count} client{})",
        if count == 1 { "" } else { "s" }
    );
    assert!(server.wait_for_log(&needle), "{needle}");
    client
}

fn three_processes_one_room_every_message_once_in_one_order() {
    let Some(redis) = RedisProcess::start("three_processes_one_room", &[]) else {
        return;
    };
    let servers: Vec<ServerProcess> = (0..3).map(|_| wschat_on(&redis)).collect();
    let mut clients: Vec<TcpStream> = Vec::new();
    for server in &servers {
        clients.push(joined(server, 1));
        clients.push(joined(server, 2));
    }
    // Every client sends 40 messages at once, from its own thread.
    const EACH: usize = 40;
    let senders: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let mut client = client.try_clone().unwrap();
            thread::spawn(move || {
                for n in 0..EACH {
                    send_text(&mut client, &format!("c{i} m{n}"));
                }
            })
        })
        .collect();
    let total = EACH * clients.len();
    let received: Vec<Vec<String>> = clients
        .iter_mut()
        .map(|client| read_texts(client, total))
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    // One common order, every message exactly once, each sender in order.
    for (i, got) in received.iter().enumerate() {
        assert_eq!(got, &received[0], "client {i} saw another order");
    }
    let bodies: Vec<&str> = received[0]
        .iter()
        .map(|line| line.split_once(": ").expect("ID<port>: M").1)
        .collect();
    assert_eq!(
        bodies.iter().collect::<HashSet<_>>().len(),
        total,
        "each once"
    );
    let mut next: HashMap<&str, usize> = HashMap::new();
    for body in &bodies {
        let (sender, n) = body.split_once(' ').unwrap();
        let n: usize = n[1..].parse().unwrap();
        let expected = next.entry(sender).or_insert(0);
        assert_eq!(n, *expected, "{sender}'s messages out of order");
        *expected += 1;
    }
    // Binary is relayed unchanged, across processes too.
    clients[0]
        .write_all(&client_frame(BINARY, &[0, 1, 255], true))
        .unwrap();
    for client in clients.iter_mut() {
        let frame = read_frame(client).unwrap();
        assert_eq!((frame.first_byte, frame.payload), (BINARY, vec![0, 1, 255]));
    }
}

fn without_redis_each_process_chats_alone_then_the_room_comes_back() {
    let Some(mut redis) = RedisProcess::start("without_redis", &[]) else {
        return;
    };
    let (first, second, mut a, mut a2, mut b) = two_processes(&redis);
    send_text(&mut a, "before");
    for client in [&mut a, &mut a2, &mut b] {
        assert!(read_texts(client, 1)[0].ends_with(": before"));
    }

    // Redis gone: one warning each, and each process chats on its own.
    redis.kill();
    assert!(first.wait_for_log("lost ("));
    assert!(second.wait_for_log("lost ("));
    for i in 0..20 {
        send_text(&mut a, &format!("alone {i}"));
    }
    for client in [&mut a, &mut a2] {
        let got = read_texts(client, 20);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, l)| l.ends_with(&format!(": alone {i}")))
        );
    }
    assert_eq!(
        texts_within(&mut b, Duration::from_millis(500)),
        Vec::<String>::new()
    );
    assert_eq!(first.count_log("lost ("), 1, "warned once, not per message");

    // Redis back on the same port: the shared room returns within seconds,
    // and nobody was disconnected meanwhile.
    redis.restart();
    let started = Instant::now();
    assert!(first.wait_for_log("shared again"));
    assert!(second.wait_for_log("shared again"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    send_text(&mut b, "after");
    for client in [&mut a, &mut a2, &mut b] {
        assert!(read_texts(client, 1)[0].ends_with(": after"));
    }
    for server in [&first, &second] {
        assert_eq!(server.count_log("disconnected"), 0);
    }
}

/// Messages in flight when Redis dies: each reaches each client of its own
/// process exactly once (through Redis, or delivered here when it could no
/// longer come back), and never twice anywhere.
fn no_message_is_delivered_twice_when_redis_dies_mid_burst() {
    let Some(mut redis) = RedisProcess::start("no_message_twice", &[]) else {
        return;
    };
    let (first, _second, mut a, mut a2, mut b) = two_processes(&redis);
    const BURST: usize = 2000;
    let mut sender = a.try_clone().unwrap();
    let burst = thread::spawn(move || {
        for n in 0..BURST {
            send_text(&mut sender, &format!("burst {n}"));
        }
    });
    thread::sleep(Duration::from_millis(20));
    redis.kill();
    burst.join().unwrap();
    for client in [&mut a, &mut a2] {
        let got = read_texts(client, BURST);
        let expected: Vec<String> = (0..BURST).map(|n| format!("burst {n}")).collect();
        let bodies: Vec<String> = got
            .iter()
            .map(|l| l.split_once(": ").unwrap().1.to_string())
            .collect();
        assert_eq!(bodies, expected, "each once, in order");
        assert!(texts_within(client, Duration::from_millis(300)).is_empty());
    }
    let got_b = texts_within(&mut b, Duration::from_millis(500));
    let unique: HashSet<&String> = got_b.iter().collect();
    assert_eq!(
        unique.len(),
        got_b.len(),
        "nothing twice on the other process"
    );
    assert!(first.wait_for_log("lost ("));
}

/// A subscriber that Redis drops for being slow (its output buffer limit)
/// is treated like Redis going away: alone, then back.
fn a_subscriber_dropped_by_redis_for_being_slow_comes_back() {
    let Some(redis) = RedisProcess::start(
        "slow_subscriber",
        &["--client-output-buffer-limit", "pubsub 256kb 0 0"],
    ) else {
        return;
    };
    let fast = wschat_on(&redis);
    let slow = wschat_on(&redis);
    let mut a = joined(&fast, 1);
    let mut b = joined(&slow, 1);
    // The slow process stops reading anything while the other publishes.
    slow.signal("STOP");
    // More than the kernel's socket buffers take, so that Redis's own
    // output buffer for the stopped subscriber passes its limit.
    let big = "x".repeat(32_000);
    let mut sender = a.try_clone().unwrap();
    let burst = thread::spawn(move || {
        for _ in 0..500 {
            send_text(&mut sender, &big);
        }
    });
    read_texts(&mut a, 500);
    burst.join().unwrap();
    slow.signal("CONT");
    assert!(slow.wait_for_log("lost ("));
    assert!(slow.wait_for_log("shared again"));
    send_text(&mut a, "still one room");
    // b may have received some of the burst before Redis dropped it.
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        let frame = read_frame(&mut b).expect("the message after the return");
        if frame.payload.ends_with(b": still one room") {
            break;
        }
    }
    assert_eq!(slow.count_log("disconnected"), 0);
}

fn redis_unreachable_at_start_or_a_bad_url_exits_1() {
    let start = |redis: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", "127.0.0.1:0", "--redis", redis])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = start(&format!("redis://127.0.0.1:{}", free_port()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot subscribe at redis://"), "{stderr}");
    let (code, stderr) = start("http://127.0.0.1:6379");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a redis://HOST:PORT URL"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn echo_mode_ignores_redis() {
    let server = ServerProcess::start(&[
        "--echo",
        "--redis",
        &format!("redis://127.0.0.1:{}", free_port()),
    ]);
    assert!(server.wait_for_log("--echo ignores --redis"));
    let mut client = raw_client(server.addr);
    send_text(&mut client, "just me");
    assert_eq!(read_texts(&mut client, 1), ["just me"]);
}

/// A "Redis" that confirms the subscription and then pushes a message
/// whose bulk length is 99,999,999,999 bytes: wschat refuses it on its
/// first line, without allocating, treats Redis as gone, and its clients
/// chat on.
fn a_hostile_redis_is_given_up_on_not_believed() {
    use std::io::Read;
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                let Ok(n) = stream.read(&mut buf) else { return };
                let command = String::from_utf8_lossy(&buf[..n]).to_string();
                if command.contains("SUBSCRIBE") {
                    let _ = stream.write_all(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nwschat\r\n:1\r\n");
                    thread::sleep(Duration::from_millis(300));
                    let _ = stream
                        .write_all(b"*3\r\n$7\r\nmessage\r\n$6\r\nwschat\r\n$99999999999\r\n");
                } else {
                    let _ = stream.write_all(b"+PONG\r\n");
                }
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let server = ServerProcess::start(&["--redis", &format!("redis://127.0.0.1:{port}")]);
    assert!(server.wait_for_log("lost (a bad reply: a bulk string of 99999999999 bytes"));
    let mut a = joined(&server, 1);
    send_text(&mut a, "still here");
    assert!(read_texts(&mut a, 1)[0].ends_with(": still here"));
    assert!(server.memory_kib("VmRSS") < 64 * 1024, "no huge allocation");
}

/// Redis stalled (SIGSTOP) while a client floods: what waits for Redis is
/// bounded (`MAX_PENDING_BYTES`, 64 MiB); past it Redis is given up on,
/// the messages are delivered here, and the server's memory stays small.
fn a_stalled_redis_does_not_let_memory_grow() {
    let Some(redis) = RedisProcess::start("stalled_redis", &[]) else {
        return;
    };
    let server = wschat_on(&redis);
    let mut flooder = joined(&server, 1);
    redis.signal("STOP");
    let message = client_frame(BINARY, &vec![b'x'; 1_000_000], true);
    for _ in 0..150 {
        if flooder.write_all(&message).is_err() {
            break; // dropped as too slow to read its own flood: fine
        }
    }
    assert!(server.wait_for_log("lost (too much is waiting for Redis"));
    let rss = server.memory_kib("VmRSS");
    assert!(rss < 160 * 1024, "{rss} KiB resident");
    // The room goes on, alone, and returns when Redis does.
    let mut other = raw_client(server.addr);
    chats(&mut other, "still chatting");
    redis.signal("CONT");
    assert!(server.wait_for_log("shared again"));
}
