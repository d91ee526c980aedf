//! `wschat`: parse the command line, bind, serve.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use wschat::config::{Command, USAGE, parse_args};
use wschat::server::{Server, serve};

fn main() -> ExitCode {
    // RUST_LOG picks the level; without it, info.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wschat: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("wschat: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    if config.echo {
        log::info!("wschat echo server listening on ws://{addr}/");
    } else {
        log::info!("wschat listening on ws://{addr}/ - open http://{addr}/ in a browser to chat");
    }
    serve(listener, Arc::new(Server::new(config)));
    ExitCode::SUCCESS
}
