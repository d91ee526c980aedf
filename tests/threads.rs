//! A server that cannot start a thread for a new client: that client gets
//! 503 at once, and the server goes on. Capping a process's threads needs
//! root (RLIMIT_NPROC does not bind root itself), so this test has a file of
//! its own, run by `run_tests`, which says SKIPPED, and why, where it
//! cannot run.

mod common;

use common::*;
use std::thread;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    run_tests(&[(
        "when_no_thread_can_be_started_clients_get_503_and_the_server_goes_on",
        when_no_thread_can_be_started_clients_get_503_and_the_server_goes_on,
    )])
}

fn when_no_thread_can_be_started_clients_get_503_and_the_server_goes_on() {
    // RLIMIT_NPROC caps the threads of a user, but not of root: run the
    // server as `nobody` with a cap of a few threads. That needs root.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let tools = ["prlimit", "setpriv"].iter().all(|t| {
        std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !is_root || !tools {
        skip(
            "when_no_thread_can_be_started_clients_get_503_and_the_server_goes_on",
            "needs root and util-linux's prlimit and setpriv to cap threads",
        );
        return;
    }
    // A copy of the binary where `nobody` may run it, whatever the checkout's permissions.
    let dir = std::env::temp_dir().join(format!("wschat-nproc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("wschat");
    std::fs::copy(env!("CARGO_BIN_EXE_wschat"), &binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = binary.to_str().unwrap();
    // RLIMIT_NPROC counts every thread the user already runs, anywhere.
    let limit = format!("--nproc={}", threads_of_user(65534) + 4);
    let server = ServerProcess::start_with(
        &[
            "prlimit",
            &limit,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            binary,
        ],
        &["--echo"],
    );
    let _ = std::fs::remove_dir_all(&dir); // the running process keeps its copy
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut stream = connect(server.addr);
        let (head, body) = http_exchange(&mut stream, upgrade_request("").as_bytes());
        match status(&head) {
            101 => held.push(stream),
            503 => {
                assert!(body.contains("too many clients"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {head}"),
        }
    }
    assert!(
        !held.is_empty() && refused > 0,
        "held {} refused {refused}",
        held.len()
    );
    assert!(server.wait_for_log("no thread for a new client, refused with 503"));
    // Those connected still chat; once they leave, newcomers get threads again.
    chats(&mut held[0], "still served");
    drop(held);
    thread::sleep(Duration::from_millis(300));
    let mut again = raw_client(server.addr);
    chats(&mut again, "threads again");
}

/// How many threads the user `uid` runs right now, from /proc.
fn threads_of_user(uid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| {
            status.lines().any(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().next())
                    .is_some_and(|real| real == uid.to_string())
            })
        })
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .sum()
}
