//! The command line, parsed by hand: every option of `wschat --help`, with
//! defaults chosen so that a bare `cargo run` starts a chat server.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Everything the server can be told on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Echo mode: each message goes back to its sender only.
    pub echo: bool,
    /// Largest message accepted, in bytes, after reassembly of fragments.
    pub max_message: usize,
    /// Connections served at once; one more gets HTTP 503.
    pub max_clients: usize,
    /// Origins allowed to connect; empty means any.
    pub allow_origins: Vec<String>,
    /// How often the server pings every client; `None` turns pings off.
    pub ping_interval: Option<Duration>,
    /// Time a client has to send its whole opening request.
    pub handshake_timeout: Duration,
    /// Time a write may block before the client is dropped.
    pub write_timeout: Duration,
    /// The most memory all clients' unfinished messages may hold together.
    pub max_buffered: usize,
    /// `redis://HOST:PORT`: share the room with every wschat on that Redis.
    pub redis: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8002)),
            echo: false,
            max_message: 1 << 20,
            max_clients: 10_000,
            allow_origins: Vec::new(),
            ping_interval: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_buffered: 256 << 20,
            redis: None,
        }
    }
}

/// Where to connect and how to behave: `wschat connect`'s command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server's host name or address, as in the URL.
    pub host: String,
    /// The server's port (80 if the URL has none).
    pub port: u16,
    /// The path and query to ask for, `/` at least.
    pub resource: String,
    /// Send every message received back unchanged.
    pub echo: bool,
    /// An `Origin` header to send, as a browser would.
    pub origin: Option<String>,
}

impl ClientConfig {
    /// The `Host` header's value (§4.1 item 4): the port only if not 80.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host) // an IPv6 address
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL, as the user gave it.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.host_header(), self.resource)
    }
}

/// The text of `wschat --help`.
pub const USAGE: &str = "\
wschat: a WebSocket chat server written by hand (RFC 6455)

Usage: wschat [OPTIONS]                  run the chat server
       wschat connect [--echo] [--origin ORIGIN] ws://HOST:PORT/PATH
                                        chat from the terminal, as a client

Options:
  --listen ADDR              address and port to listen on [default: 127.0.0.1:8002]
  --echo                     echo mode: every message goes back, unchanged, to its sender only
  --max-message BYTES        largest message accepted, after reassembly [default: 1048576]
  --max-clients N            connections served at once; more get HTTP 503 [default: 10000]
  --allow-origin ORIGIN      accept handshakes only from this Origin (repeatable) [default: any]
  --ping-interval SECS       ping every client this often; 0 = off [default: 30]
  --handshake-timeout SECS   time allowed for the opening request [default: 10]
  --write-timeout SECS       drop a client whose writes block this long [default: 10]
  --max-buffered BYTES       memory for all unfinished incoming messages together;
                             a frame past it gets close 1013 [default: 268435456]
  --redis URL                redis://HOST:PORT: one room with every wschat on that Redis
  -h, --help                 print this help
  -V, --version              print the name and version

Client options (wschat connect):
  --echo                     send every message received back, unchanged
  --origin ORIGIN            send this Origin header, as a browser would
  Each line of stdin is sent as a text message; each message received is
  printed as a line. The end of stdin (Ctrl-D) closes with 1000.

Logging: RUST_LOG=info (default), debug (handshakes), trace (every frame).
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the server with this configuration.
    Run(Config),
    /// Print [`USAGE`] and exit.
    Help,
    /// Print the name and version and exit.
    Version,
    /// Connect to a server as a client.
    Connect(ClientConfig),
}

/// A command line that cannot be obeyed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for ArgError {}

/// Parses the arguments that follow the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ArgError> {
    let mut config = Config::default();
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("connect") {
        args.next();
        return parse_connect(args);
    }
    while let Some(arg) = args.next() {
        let (flag, inline) = split_flag(arg);
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ArgError(format!("{flag} needs a value")))
        };
        // A flag that takes no value refuses one: `--echo=no` is a mistake,
        // not "on".
        let no_value = || match &inline {
            Some(_) => Err(ArgError(format!("{flag} takes no value"))),
            None => Ok(()),
        };
        match flag.as_str() {
            "-h" | "--help" => return no_value().map(|()| Command::Help),
            "-V" | "--version" => return no_value().map(|()| Command::Version),
            "--echo" => {
                no_value()?;
                config.echo = true;
            }
            "--listen" => config.listen = parse_listen(&flag, &value()?)?,
            "--max-message" => config.max_message = parse_positive(&flag, &value()?)?,
            "--max-clients" => config.max_clients = parse_positive(&flag, &value()?)?,
            "--allow-origin" => config.allow_origins.push(value()?),
            "--ping-interval" => {
                let secs: u64 = parse_value(&flag, &value()?, "a whole number of seconds")?;
                config.ping_interval = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "--handshake-timeout" => config.handshake_timeout = parse_seconds(&flag, &value()?)?,
            "--write-timeout" => config.write_timeout = parse_seconds(&flag, &value()?)?,
            "--max-buffered" => config.max_buffered = parse_positive(&flag, &value()?)?,
            "--redis" => config.redis = Some(value()?),
            other => {
                return Err(ArgError(format!(
                    "unknown option {other:?}; see wschat --help"
                )));
            }
        }
    }
    Ok(Command::Run(config))
}

/// Both `--flag VALUE` and `--flag=VALUE` are accepted: the flag, and the
/// value if it came after `=`.
fn split_flag(arg: String) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => {
            (flag.to_string(), Some(value.to_string()))
        }
        _ => (arg, None),
    }
}

/// `wschat connect [--echo] [--origin ORIGIN] ws://HOST:PORT/PATH`.
fn parse_connect(args: impl Iterator<Item = String>) -> Result<Command, ArgError> {
    let mut args = args.peekable();
    let (mut echo, mut origin, mut url) = (false, None, None);
    while let Some(arg) = args.next() {
        let (flag, inline) = split_flag(arg);
        match flag.as_str() {
            "--echo" if inline.is_none() => echo = true,
            "--echo" => return Err(ArgError("--echo takes no value".into())),
            "--origin" => match inline.or_else(|| args.next()) {
                Some(value) => origin = Some(value),
                None => return Err(ArgError("--origin needs a value".into())),
            },
            "-h" | "--help" => return Ok(Command::Help),
            other if other.starts_with('-') => {
                return Err(ArgError(format!(
                    "unknown option {other:?} for connect; see wschat --help"
                )));
            }
            _ if url.is_some() => return Err(ArgError("connect takes one URL".into())),
            _ => url = Some(flag),
        }
    }
    let url =
        url.ok_or_else(|| ArgError("connect needs a URL, such as ws://127.0.0.1:8002/".into()))?;
    let (host, port, resource) = parse_ws_url(&url)?;
    // The origin goes into the request as it is: a line end would add a
    // header of its own (RFC 6454 §7: an origin is ASCII).
    if let Some(origin) = &origin
        && !origin.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ArgError(format!(
            "--origin {origin:?}: only visible ASCII characters"
        )));
    }
    Ok(Command::Connect(ClientConfig {
        host,
        port,
        resource,
        echo,
        origin,
    }))
}

/// `ws://host[:port][/path][?query]` (RFC 6455 §3) into host, port (80 by
/// default) and resource (`/` at least). `wss://` needs TLS, which wschat
/// leaves to a proxy; a fragment (`#...`) "MUST NOT be used" (§3).
pub fn parse_ws_url(url: &str) -> Result<(String, u16, String), ArgError> {
    let wrong = |why: &str| ArgError(format!("{url:?}: {why}"));
    let scheme_end = url
        .find("://")
        .ok_or_else(|| wrong("expected ws://HOST:PORT/PATH"))?;
    let scheme = url[..scheme_end].to_ascii_lowercase();
    if scheme == "wss" {
        return Err(wrong(
            "wss:// needs TLS, which wschat does not speak; put a TLS proxy in front \
             (docs/11-deploying.md) and connect to the server itself with ws://",
        ));
    }
    if scheme != "ws" {
        return Err(wrong("the scheme must be ws://"));
    }
    let rest = &url[scheme_end + 3..];
    if rest.contains('#') {
        return Err(wrong("a WebSocket URL has no #fragment (RFC 6455 §3)"));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, resource) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(wrong(
            "user names and passwords in the URL are not supported",
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 address: [::1]:8002
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| wrong("no ] after the IPv6 address"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(wrong("no host"));
    }
    let port = match port {
        None => 80,
        Some(port) => port
            .parse()
            .map_err(|_| wrong("the port must be a number from 0 to 65535"))?,
    };
    let resource = match resource {
        "" => "/".to_string(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_string(),
    };
    // Both go into the request as they are: a space or a line end would
    // change the request line, or add a header (RFC 9112 §3). Anything else
    // in a path is percent-encoded (RFC 3986 §2.1: `%20` for a space).
    if !resource.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(wrong(
            "the path may hold only visible ASCII characters (a space is %20)",
        ));
    }
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || b".-:_".contains(&b);
    if !host.bytes().all(host_byte) {
        return Err(wrong("not a host name or address"));
    }
    Ok((host.to_string(), port, resource))
}

fn parse_value<T: std::str::FromStr>(flag: &str, text: &str, what: &str) -> Result<T, ArgError> {
    text.parse()
        .map_err(|_| ArgError(format!("{flag} {text:?}: expected {what}")))
}

/// An IP address and port (`127.0.0.1:8002`, `[::1]:8002`), or a host name
/// and port (`localhost:9000`), which is looked up: its first address.
fn parse_listen(flag: &str, text: &str) -> Result<SocketAddr, ArgError> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let wrong = || {
        ArgError(format!(
            "{flag} {text:?}: expected an address like 127.0.0.1:8002"
        ))
    };
    if !text.contains(':') {
        return Err(wrong());
    }
    text.to_socket_addrs()
        .map_err(|_| wrong())?
        .next()
        .ok_or_else(wrong)
}

fn parse_positive(flag: &str, text: &str) -> Result<usize, ArgError> {
    match parse_value(flag, text, "a whole number above 0")? {
        0 => Err(ArgError(format!("{flag} must be above 0"))),
        n => Ok(n),
    }
}

fn parse_seconds(flag: &str, text: &str) -> Result<Duration, ArgError> {
    let secs = parse_positive(flag, text)?;
    Ok(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, ArgError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn no_arguments_gives_the_contract_defaults() {
        let Ok(Command::Run(config)) = parse(&[]) else {
            panic!("defaults should parse");
        };
        assert_eq!(config.listen.to_string(), "127.0.0.1:8002");
        assert!(!config.echo);
        assert_eq!(config.max_message, 1_048_576);
        assert_eq!(config.max_clients, 10_000);
        assert!(config.allow_origins.is_empty());
        assert_eq!(config.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.write_timeout, Duration::from_secs(10));
        assert_eq!(config.max_buffered, 268_435_456);
    }

    #[test]
    fn every_option_is_read() {
        let args = [
            "--listen",
            "0.0.0.0:9001",
            "--echo",
            "--max-message=16777216",
            "--max-clients",
            "5",
            "--allow-origin",
            "http://a",
            "--allow-origin",
            "http://b",
            "--ping-interval",
            "0",
            "--handshake-timeout",
            "3",
            "--write-timeout",
            "4",
            "--max-buffered",
            "67108864",
        ];
        let Ok(Command::Run(config)) = parse(&args) else {
            panic!("should parse");
        };
        assert_eq!(config.listen.to_string(), "0.0.0.0:9001");
        assert!(config.echo);
        assert_eq!(config.max_message, 16 << 20);
        assert_eq!(config.max_clients, 5);
        assert_eq!(config.allow_origins, ["http://a", "http://b"]);
        assert_eq!(config.ping_interval, None);
        assert_eq!(config.handshake_timeout, Duration::from_secs(3));
        assert_eq!(config.write_timeout, Duration::from_secs(4));
        assert_eq!(config.max_buffered, 64 << 20);
    }

    #[test]
    fn flags_without_values_refuse_one() {
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
        for wrong in ["--echo=no", "--echo=yes", "--help=1", "--version=2"] {
            let err = parse(&[wrong]).unwrap_err();
            assert!(err.0.contains("takes no value"), "{wrong}: {err}");
        }
    }

    #[test]
    fn listen_takes_a_host_name_too() {
        let Ok(Command::Run(config)) = parse(&["--listen", "localhost:9000"]) else {
            panic!("localhost:9000 should parse");
        };
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.listen.port(), 9000);
        assert!(parse(&["--listen", "localhost"]).is_err());
        assert!(parse(&["--listen", "no.such.host.invalid:80"]).is_err());
    }

    #[test]
    fn connect_takes_a_ws_url_and_two_options() {
        let Ok(Command::Connect(config)) = parse(&[
            "connect",
            "--echo",
            "--origin=http://a.b",
            "ws://localhost:9001/runCase?case=1",
        ]) else {
            panic!("should parse");
        };
        assert_eq!(
            (config.host.as_str(), config.port, config.resource.as_str()),
            ("localhost", 9001, "/runCase?case=1")
        );
        assert!(config.echo);
        assert_eq!(config.origin.as_deref(), Some("http://a.b"));
        assert_eq!(config.host_header(), "localhost:9001");
        assert_eq!(
            parse_ws_url("WS://[::1]"),
            Ok(("::1".to_string(), 80, "/".to_string()))
        );
        assert_eq!(
            parse_ws_url("ws://h?x=1"),
            Ok(("h".to_string(), 80, "/?x=1".to_string()))
        );
        let host_header = |url: &str| {
            let (host, port, resource) = parse_ws_url(url).unwrap();
            ClientConfig {
                host,
                port,
                resource,
                echo: false,
                origin: None,
            }
            .host_header()
        };
        assert_eq!(host_header("ws://example.com/"), "example.com");
        assert_eq!(host_header("ws://[::1]:8002/"), "[::1]:8002");
    }

    #[test]
    fn connect_refuses_what_it_cannot_do() {
        for (args, why) in [
            (&["connect"][..], "needs a URL"),
            (&["connect", "wss://example.com/"], "TLS"),
            (&["connect", "http://example.com/"], "ws://"),
            (&["connect", "ws://example.com/#top"], "fragment"),
            (&["connect", "ws://:80/"], "no host"),
            (&["connect", "ws://h:99999/"], "port"),
            (&["connect", "ws://h/", "ws://g/"], "one URL"),
            (&["connect", "--echo=1", "ws://h/"], "no value"),
            (&["connect", "--origin"], "needs a value"),
            (&["connect", "--listen", "ws://h/"], "unknown option"),
            (&["connect", "ws://h/x\r\nEvil: 1"], "visible ASCII"),
            (&["connect", "ws://h/a b"], "visible ASCII"),
            (&["connect", "ws://h\r\nX/"], "host"),
            (
                &["connect", "--origin", "http://a\r\nEvil: 2", "ws://h/"],
                "visible ASCII",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.0.contains(why), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_and_bad_values() {
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert!(
            parse(&["--listen", "nowhere"])
                .unwrap_err()
                .0
                .contains("--listen")
        );
        assert!(parse(&["--max-message", "-1"]).is_err());
        assert!(parse(&["--max-clients", "0"]).is_err());
        assert!(
            parse(&["--write-timeout"])
                .unwrap_err()
                .0
                .contains("needs a value")
        );
        assert!(
            parse(&["--bogus"])
                .unwrap_err()
                .0
                .contains("unknown option")
        );
    }
}
