//! The echo mode, driven by a real WebSocket client library (tungstenite).

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket, connect};

fn client(server: &ServerProcess) -> WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (socket, response) = connect(server.url()).expect("handshake");
    assert_eq!(response.status(), 101);
    socket
}

#[test]
fn text_comes_back_unchanged() {
    let server = ServerProcess::start(&["--echo"]);
    let mut ws = client(&server);
    for text in [
        "hello",
        "",
        "κόσμε",
        &"x".repeat(126),
        &"long ".repeat(20_000),
    ] {
        ws.send(Message::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text));
    }
}

#[test]
fn binary_comes_back_unchanged() {
    let server = ServerProcess::start(&["--echo"]);
    let mut ws = client(&server);
    for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        ws.send(Message::binary(data.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(data), "len {len}");
    }
}

#[test]
fn fragmented_message_comes_back_whole() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = ServerProcess::start(&["--echo"]);
    let mut ws = client(&server);
    let parts: [&[u8]; 3] = [b"frag", b"men", b"ted \xce"];
    ws.write(Message::Frame(Frame::message(
        parts[0].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping(b"between".to_vec().into())).unwrap();
    ws.write(Message::Frame(Frame::message(
        parts[1].to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.write(Message::Frame(Frame::message(
        parts[2].to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.write(Message::Frame(Frame::message(
        b"\xba".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(b"between".to_vec().into())
    );
    assert_eq!(ws.read().unwrap(), Message::text("fragmented κ"));
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let server = ServerProcess::start(&["--echo"]);
    let mut ws = client(&server);
    ws.send(Message::Ping(b"are you there?".to_vec().into()))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(b"are you there?".to_vec().into())
    );
    ws.send(Message::text("still works")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still works"));
}

#[test]
fn clean_close_echoes_the_code_and_ends_tcp() {
    let server = ServerProcess::start(&["--echo"]);
    let mut ws = client(&server);
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "done here".into(),
    }))
    .unwrap();
    let reply = match ws.read() {
        Ok(Message::Close(frame)) => frame,
        other => panic!("expected the close reply, got {other:?}"),
    };
    assert_eq!(reply.map(|f| u16::from(f.code)), Some(4000));
    assert!(matches!(
        ws.read(),
        Err(tungstenite::Error::ConnectionClosed)
    ));
    assert!(server.wait_for_log("closed by client with 4000 \"done here\""));
}

#[test]
fn subprotocol_chat_is_selected_when_offered() {
    use tungstenite::client::IntoClientRequest;
    let server = ServerProcess::start(&["--echo"]);
    let mut request = server.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "superchat, chat".parse().unwrap());
    let (mut ws, response) = tungstenite::connect(request).unwrap();
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "chat");
    ws.send(Message::text("with a subprotocol")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("with a subprotocol"));
}

#[test]
fn frame_sent_with_the_handshake_is_not_lost() {
    // Pipelining: the first frame arrives in the same packet as the request.
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = common::connect(server.addr);
    let mut bytes = upgrade_request("").into_bytes();
    bytes.extend(client_frame(TEXT, b"early bird", true));
    stream.write_all(&bytes).unwrap();
    let (head, _) = read_http_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    let frame = read_frame(&mut stream).unwrap();
    assert_eq!(
        frame,
        ServerFrame {
            first_byte: TEXT,
            payload: b"early bird".to_vec()
        }
    );
}

#[test]
fn frames_split_into_single_bytes_and_many_in_one_write() {
    let server = ServerProcess::start(&["--echo"]);
    let mut stream = raw_client(server.addr);
    for byte in client_frame(TEXT, b"one byte at a time", true) {
        stream.write_all(&[byte]).unwrap();
        stream.flush().unwrap();
    }
    assert_eq!(
        read_frame(&mut stream).unwrap().payload,
        b"one byte at a time"
    );
    let mut many = Vec::new();
    for i in 0..50 {
        many.extend(client_frame(TEXT, format!("message {i}").as_bytes(), true));
    }
    stream.write_all(&many).unwrap();
    for i in 0..50 {
        assert_eq!(
            read_frame(&mut stream).unwrap().payload,
            format!("message {i}").as_bytes()
        );
    }
}
