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
        }
    }
}

/// The text of `wschat --help`.
pub const USAGE: &str = "\
wschat: a WebSocket chat server written by hand (RFC 6455)

Usage: wschat [OPTIONS]

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
  -h, --help                 print this help
  -V, --version              print the name and version

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
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag VALUE` and `--flag=VALUE`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
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
            other => {
                return Err(ArgError(format!(
                    "unknown option {other:?}; see wschat --help"
                )));
            }
        }
    }
    Ok(Command::Run(config))
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
