//! `wschat`: parse the command line, bind, serve until SIGINT or SIGTERM;
//! or, as `wschat connect`, be a client.

use std::io::{self, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use wschat::client;
use wschat::config::Config;
use wschat::config::{Command, USAGE, parse_args};
use wschat::os::{block_stop_signals, raise_open_file_limit};
use wschat::server::{SPARE_DESCRIPTORS, Server, serve};

fn main() -> ExitCode {
    let command = parse_args(std::env::args().skip(1));
    // RUST_LOG picks the level. Without it: info for the server (connects
    // and disconnects); warnings only for the client, whose stderr is for
    // the one line that says why it failed.
    let default = if matches!(command, Ok(Command::Connect(_))) {
        "warn"
    } else {
        "info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    let config = match command {
        Ok(Command::Run(config)) => config,
        Ok(Command::Connect(config)) => {
            return match client::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say(&e.to_string());
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Command::Help) => {
            let _ = io::stdout().write_all(USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            let _ = writeln!(io::stdout(), "wschat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say(&e.to_string());
            return ExitCode::from(2);
        }
    };
    run_server(config)
}

/// One line on stderr. `eprintln!` would panic if stderr were a closed
/// pipe; a message nobody can read is not worth a crash.
fn say(text: &str) {
    let _ = writeln!(io::stderr(), "wschat: {text}");
}

/// The server, until SIGINT or SIGTERM.
fn run_server(mut config: Config) -> ExitCode {
    // Before any thread starts, so that every thread inherits it (see
    // src/os.rs): from here on SIGINT and SIGTERM wait for `wait()`.
    let signals = block_stop_signals();
    fit_open_file_limit(&mut config);
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(e) => {
            say(&format!("cannot listen on {}: {e}", config.listen));
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let redis = config.redis.clone();
    let max_message = config.max_message;
    let server = Arc::new(Server::new(config));
    match redis {
        Some(_) if server.config.echo => log::info!("--echo ignores --redis"),
        Some(url) => {
            if let Err(e) = server.chat.share_through_redis(&url, max_message) {
                say(&e.to_string());
                return ExitCode::FAILURE;
            }
        }
        None => {}
    }
    let signals = match signals {
        Ok(signals) => signals,
        Err(e) => {
            log::warn!("no graceful stop ({e}): Ctrl-C ends the process at once");
            say_where(&server, addr);
            serve(listener, server);
            return ExitCode::SUCCESS;
        }
    };
    let accepting = Arc::clone(&server);
    let spawned = thread::Builder::new()
        .name("accept".into())
        .spawn(move || serve(listener, accepting));
    if let Err(e) = spawned {
        say(&format!("cannot start the accept thread: {e}"));
        return ExitCode::FAILURE;
    }
    say_where(&server, addr);
    match signals.wait() {
        Ok(signal) => log::info!("{signal} received: stopping"),
        Err(e) => log::warn!("waiting for signals failed ({e}): stopping"),
    }
    server.stop(addr);
    ExitCode::SUCCESS
}

/// The first line a user sees: where the server listens.
fn say_where(server: &Server, addr: std::net::SocketAddr) {
    if server.config.echo {
        log::info!("wschat echo server listening on ws://{addr}/");
    } else {
        log::info!("wschat listening on ws://{addr}/ - open http://{addr}/ in a browser to chat");
    }
}

/// Every connection holds a descriptor: raise the open-file limit to fit
/// `--max-clients`, or, if the hard limit does not allow it, say how many
/// clients will be served and serve that many.
fn fit_open_file_limit(config: &mut Config) {
    let wanted = (config.max_clients + SPARE_DESCRIPTORS) as u64;
    match raise_open_file_limit(wanted) {
        Ok(limit) if limit < wanted => {
            let fits = (limit as usize).saturating_sub(SPARE_DESCRIPTORS).max(1);
            log::warn!(
                "the open-file limit is {limit}: serving at most {fits} clients at once, not {} \
                 (raise it with `ulimit -n`)",
                config.max_clients
            );
            config.max_clients = fits;
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot check the open-file limit: {e}"),
    }
}
