//! The chat page (`www/index.html`) in a real browser.
//!
//! Debian's Chromium runs headless and is driven over the Chrome DevTools
//! Protocol (CDP): JSON commands over a WebSocket, for which the test uses
//! tungstenite. A command is `{"id", "method", "params", "sessionId"}`; its
//! answer carries the same `id`, and everything else that arrives (events)
//! is skipped. Each tab is a target we attach to in "flat" mode, which gives
//! a `sessionId` to put on the commands meant for that tab.
//!
//! Without a browser the tests are skipped, except under CI (`CI=true`),
//! where they fail: `.ci/run` installs Chromium.

mod common;

use common::{RedisProcess, ServerProcess, own_port, run_tests, skip};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// Run by `run_tests` (`harness = false` in Cargo.toml), which lists a test
/// that cannot run here as SKIPPED, with why.
fn main() -> std::process::ExitCode {
    run_tests(&[
        ("two_tabs_chat", two_tabs_chat),
        (
            "page_messages_files_and_scrolling",
            page_messages_files_and_scrolling,
        ),
        (
            "a_stopping_server_closes_the_page_with_1001_cleanly",
            a_stopping_server_closes_the_page_with_1001_cleanly,
        ),
        (
            "page_from_disk_uses_default_address",
            page_from_disk_uses_default_address,
        ),
        (
            "the_page_chats_across_three_processes_behind_nginx",
            the_page_chats_across_three_processes_behind_nginx,
        ),
    ])
}

/// How long the browser gets to start, and a command or a wait to finish.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Flags for a headless Chromium on a machine without network access: the
/// background-networking flags stop it from calling Google's services, whose
/// refused connections would otherwise slow it down.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-default-browser-check",
    "--window-size=1000,700",
    "--remote-debugging-port=0",
];

/// JavaScript: the status text, the log lines and the address, to explain a failure.
const PAGE_STATE: &str = "({ url: location.href, \
    status: document.getElementById('status')?.textContent, \
    log: [...(document.getElementById('log')?.children ?? [])].map(e => e.textContent) })";

/// A headless Chromium and a CDP connection to it. Dropping it closes the
/// browser (killing it if need be) and deletes its profile directory, also
/// when a test panics.
struct Browser {
    cdp: WebSocket<TcpStream>,
    next_id: u64,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    process: ChromiumProcess,
}

/// The Chromium process and its profile directory: dropping it kills the one
/// (if it is still running) and deletes the other.
struct ChromiumProcess {
    child: Child,
    profile: PathBuf,
}

/// One tab, known by its CDP session.
struct Tab {
    session: String,
}

/// Finds Chromium; when there is none, returns `None` after saying why, or
/// panics under CI, where a skipped browser test would hide a broken setup.
fn find_browser() -> Option<PathBuf> {
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    skip(
        "the browser tests",
        "no browser found (/usr/bin/chromium, or chromium, chromium-browser or \
         google-chrome on PATH); `apt-get install chromium` runs them",
    );
    None
}

impl Browser {
    /// Starts Chromium with a fresh profile and connects to its DevTools
    /// WebSocket. `None` (after printing why) if there is no browser.
    fn launch() -> Option<Browser> {
        let program = find_browser()?;
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "wschat-chromium-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the browser profile directory");
        let child = Command::new(&program)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        // From here on, a panic drops `process`, which cleans up.
        let mut process = ChromiumProcess { child, profile };

        // Chromium prints "DevTools listening on ws://..." on stderr. The
        // pipe is read to its end by a thread, so Chromium never blocks on
        // it, and the last lines are kept to explain a failure.
        let stderr = process.child.stderr.take().expect("stderr");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut tail = tail.lock().unwrap();
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let Ok(url) = rx.recv_timeout(START_TIMEOUT) else {
            panic!(
                "{} did not print its DevTools address within {START_TIMEOUT:?}; \
                 its stderr ended with:\n{}",
                program.display(),
                tail_text(&stderr_tail)
            );
        };
        let cdp = connect_cdp(&url)
            .unwrap_or_else(|e| panic!("cannot connect to the browser at {url}: {e}"));
        Some(Browser {
            cdp,
            next_id: 0,
            stderr_tail,
            process,
        })
    }

    /// Sends one CDP command (to a tab if `session` is given) and returns its
    /// result, skipping events and waiting at most [`TIMEOUT`].
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\nbrowser stderr ended with:\n{}", self.stderr()))
    }

    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.cdp
            .send(Message::text(command.to_string()))
            .map_err(|e| format!("CDP {method}: send failed: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("CDP {method}: no answer within {timeout:?}"));
            }
            self.cdp.get_ref().set_read_timeout(Some(left)).unwrap();
            let text = match self.cdp.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue, // pings and the like
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue; // the deadline check above ends the wait
                }
                Err(e) => return Err(format!("CDP {method}: connection failed: {e}")),
            };
            let mut reply: Value =
                serde_json::from_str(&text).map_err(|e| format!("CDP: bad JSON {text:?}: {e}"))?;
            if reply["id"] != json!(id) {
                continue; // an event, or the answer to an earlier command
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("CDP {method} failed: {error}"));
            }
            return Ok(reply["result"].take());
        }
    }

    /// Opens `url` in a new tab (its own window, so every tab is in front
    /// and gets keyboard input) and attaches to it.
    fn open(&mut self, url: &str) -> Tab {
        let created = self.call(
            None,
            "Target.createTarget",
            json!({ "url": url, "newWindow": true }),
        );
        let target = created["targetId"].clone();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        let tab = Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        };
        // Let each tab behave as if it had the focus, as a tab in front does.
        self.call(
            Some(&tab.session),
            "Emulation.setFocusEmulationEnabled",
            json!({ "enabled": true }),
        );
        tab
    }

    /// Evaluates a JavaScript expression in `tab` and returns its value
    /// (awaiting it if it is a promise). A thrown exception fails the test.
    fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        self.try_eval(tab, expression)
            .unwrap_or_else(|e| panic!("{e}\nbrowser stderr ended with:\n{}", self.stderr()))
    }

    /// Like [`Browser::eval`], but a thrown exception, or a page that is
    /// still loading, is an `Err`.
    fn try_eval(&mut self, tab: &Tab, expression: &str) -> Result<Value, String> {
        let mut result = self.try_call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            TIMEOUT,
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("JavaScript `{expression}` threw: {exception}"));
        }
        Ok(result["result"]["value"].take())
    }

    /// Evaluates `expression` in `tab` until it gives a value other than
    /// null, undefined or false, and returns that value; fails with the
    /// page's state after [`TIMEOUT`]. Until then an exception counts as
    /// "not yet": the page may still be loading.
    fn wait_for(&mut self, tab: &Tab, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let last = match self.try_eval(tab, expression) {
                Ok(value) if !(value.is_null() || value == json!(false)) => return value,
                Ok(value) => format!("the last value was {value}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                let state = self.try_eval(tab, PAGE_STATE);
                panic!(
                    "timed out after {TIMEOUT:?} waiting for {what} ({last}); \
                     the page shows {state:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `#status` to read `state`.
    fn wait_status(&mut self, tab: &Tab, state: &str) {
        self.wait_for(
            tab,
            &format!("#status to read {state}"),
            &format!(
                "document.getElementById('status').textContent === {}",
                js(state)
            ),
        );
    }

    /// Waits for a `#log` line whose text matches the JavaScript regular
    /// expression `pattern`, and returns that text.
    fn wait_log_line(&mut self, tab: &Tab, pattern: &str) -> String {
        let expression = format!(
            "[...document.getElementById('log').children].map(e => e.textContent) \
             .find(t => /{pattern}/.test(t)) ?? null"
        );
        let found = self.wait_for(
            tab,
            &format!("a log line matching /{pattern}/"),
            &expression,
        );
        found.as_str().expect("a string").to_string()
    }

    /// Clicks the element with this id, as a user would.
    fn click(&mut self, tab: &Tab, id: &str) {
        self.eval(tab, &format!("document.getElementById({}).click()", js(id)));
    }

    /// Types `text` into `#message` as keyboard input, then presses Enter.
    fn type_and_enter(&mut self, tab: &Tab, text: &str) {
        self.type_text(tab, text);
        for kind in ["keyDown", "keyUp"] {
            self.call(
                Some(&tab.session),
                "Input.dispatchKeyEvent",
                json!({
                    "type": kind, "key": "Enter", "code": "Enter",
                    "windowsVirtualKeyCode": 13, "text": "\r",
                }),
            );
        }
    }

    /// Focuses `#message` and types `text` into it.
    fn type_text(&mut self, tab: &Tab, text: &str) {
        self.eval(tab, "document.getElementById('message').focus()");
        self.call(
            Some(&tab.session),
            "Input.insertText",
            json!({ "text": text }),
        );
    }

    /// Saves a PNG of `tab` as `DIR/name.png` when the environment variable
    /// WSCHAT_SCREENSHOT_DIR=DIR is set, to look at the page after a run.
    fn screenshot(&mut self, tab: &Tab, name: &str) {
        let Some(dir) = std::env::var_os("WSCHAT_SCREENSHOT_DIR") else {
            return;
        };
        use base64::Engine;
        let shot = self.call(
            Some(&tab.session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        let path = Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// The last lines Chromium wrote to stderr.
    fn stderr(&self) -> String {
        tail_text(&self.stderr_tail)
    }
}

/// The kept lines, one per line.
fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let lines = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Vec::from(lines.clone()).join("\n")
}

/// Opens the browser's DevTools WebSocket over a plain TCP stream (so its
/// read timeout can be set).
fn connect_cdp(url: &str) -> Result<WebSocket<TcpStream>, String> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected DevTools address {url}"))?;
    let stream = TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let (ws, _) = tungstenite::client::client(url, stream).map_err(|e| e.to_string())?;
    Ok(ws)
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask politely first, so Chromium ends its helper processes itself;
        // then make sure. Nothing here may panic: this also runs while a
        // failed test unwinds.
        let _ = self.try_call(None, "Browser.close", json!({}), Duration::from_secs(2));
        let _ = self.cdp.close(None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Then `self.process` is dropped.
    }
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helper processes may still be writing into the profile for a moment.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `text` as a JavaScript string literal.
fn js(text: &str) -> String {
    Value::from(text).to_string()
}

/// The JavaScript regular-expression source matching exactly `text`.
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// JavaScript: does `#log` hold an element whose text ends with `text`, and
/// no `<img>` element at all?
fn shows_as_text(text: &str) -> String {
    format!(
        "[...document.getElementById('log').children].some(e => e.textContent.endsWith({})) \
         && document.querySelector('#log img') === null",
        js(text)
    )
}

/// A browser with two tabs on `server`'s page, both OPEN; `None` (after
/// saying SKIPPED) if there is no browser.
fn two_open_tabs(server: &ServerProcess) -> Option<(Browser, Tab, Tab)> {
    let mut browser = Browser::launch()?;
    let page = format!("http://{}/", server.addr);
    let a = browser.open(&page);
    browser.wait_status(&a, "OPEN");
    let b = browser.open(&page);
    browser.wait_status(&b, "OPEN");
    Some((browser, a, b))
}

/// Two tabs chat through the real server: typing and Enter, the Send button,
/// HTML shown as text, Close and Connect.
fn two_tabs_chat() {
    let server = ServerProcess::start(&[]);
    let Some((mut browser, a, b)) = two_open_tabs(&server) else {
        return;
    };

    // Neither tab may ever run an alert: a message rendered as HTML would.
    for tab in [&a, &b] {
        browser.eval(
            tab,
            "window.alerted = false; window.alert = () => { window.alerted = true; }",
        );
    }

    // Tab A types a message and presses Enter; both tabs show it as
    // "ID<port>: text", the same line, and the input is emptied.
    let text = "hello from tab A, κόσμε";
    browser.type_and_enter(&a, text);
    let line_a = browser.wait_log_line(&a, &format!("^ID\\d+: {}$", regex_escape(text)));
    let line_b = browser.wait_log_line(&b, &format!("^ID\\d+: {}$", regex_escape(text)));
    assert_eq!(line_a, line_b);
    let id_a = line_a.split(':').next().unwrap().to_string();
    assert!(
        id_a.len() > 2 && id_a[2..].bytes().all(|b| b.is_ascii_digit()),
        "{id_a}"
    );
    assert!(
        server.wait_for_log(&id_a),
        "{id_a} is not a client the server knows"
    );
    assert_eq!(
        browser.eval(&a, "document.getElementById('message').value"),
        json!("")
    );

    // A third tab joins with the handler of chapter 9, section 5, which
    // pastes each message into the page as HTML (written here for the
    // test, in the style of the seed tutorials' pages).
    let naive = browser.open(&format!("http://{}/", server.addr));
    browser.wait_status(&naive, "OPEN");
    browser.eval(
        &naive,
        "(() => { \
           window.alerted = false; window.alert = () => { window.alerted = true; }; \
           const box = document.createElement('div'); document.body.appendChild(box); \
           const pasting = new WebSocket(location.href.replace('http', 'ws')); \
           pasting.onmessage = (message) => \
               box.insertAdjacentHTML('beforeend', '<p>' + message.data + '</p>'); \
           return new Promise((resolve) => { pasting.onopen = () => resolve(true); }); \
         })()",
    );

    // Tab B sends markup with the Send button; both tabs show the characters,
    // with B's own id, and no <img> element appears.
    let markup = "<img src=x onerror=alert(1)>";
    browser.type_text(&b, markup);
    browser.click(&b, "send");
    for tab in [&a, &b] {
        browser.wait_for(tab, "the markup shown as text", &shows_as_text(markup));
    }
    let line = browser.wait_log_line(&a, &format!("^ID\\d+: {}$", regex_escape(markup)));
    let id_b = line.split(':').next().unwrap();
    assert_ne!(id_a, id_b, "two clients must have two names");
    assert!(
        server.wait_for_log(id_b),
        "{id_b} is not a client the server knows"
    );
    // The pasting tab ran the sender's script; the chat page's did not.
    browser.wait_for(
        &naive,
        "the pasted <img>'s onerror to run",
        "window.alerted",
    );
    for tab in [&a, &b] {
        assert_eq!(browser.eval(tab, "window.alerted"), json!(false));
    }

    // Close in tab A: CLOSING at once, then CLOSED and a line with code 1000.
    let status = browser.eval(
        &a,
        "document.getElementById('close').click(); document.getElementById('status').textContent",
    );
    assert_eq!(status, json!("CLOSING"));
    browser.wait_status(&a, "CLOSED");
    browser.wait_log_line(&a, "connection closed.*code 1000");

    // Connect again: OPEN, and the new connection chats (under a new name,
    // as it comes from a new port).
    browser.click(&a, "connect");
    browser.wait_status(&a, "OPEN");
    browser.type_and_enter(&a, "back again");
    let line = browser.wait_log_line(&b, "^ID\\d+: back again$");
    let id_new = line.split(':').next().unwrap();
    browser.wait_log_line(&a, &format!("^{id_new}: back again$"));
    assert_ne!(id_new, id_a, "a new connection has a new port");
    browser.wait_status(&b, "OPEN");
    browser.screenshot(&a, "tab-a");
    browser.screenshot(&b, "tab-b");
}

/// The page's messages: one element per message however many lines, the
/// sender unmistakable, a file sent as one binary message and an image shown
/// from a blob: URL, the log following new messages, and Enter while
/// disconnected saying what to do.
fn page_messages_files_and_scrolling() {
    let server = ServerProcess::start(&[]);
    let Some((mut browser, a, b)) = two_open_tabs(&server) else {
        return;
    };

    // A message whose second line pretends to come from someone else.
    browser.eval(&a, "ws.send('first line\\nID40000: I am someone else')");
    let element = browser.wait_for(
        &b,
        "the two-line message as one element",
        "[...document.querySelectorAll('#log > .chat')] \
         .find(e => e.textContent.endsWith('I am someone else')) \
         ?.querySelectorAll('.sender').length ?? null",
    );
    assert_eq!(element, json!(1), "one sender name in the one element");

    // A file: the bytes of a 1x1 PNG, chosen in tab A's #file input.
    let sent = browser.eval(
        &a,
        "(() => { \
           const png = Uint8Array.from(atob('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='), c => c.charCodeAt(0)); \
           const input = document.getElementById('file'); \
           const files = new DataTransfer(); \
           files.items.add(new File([png], 'dot.png', { type: 'image/png' })); \
           input.files = files.files; \
           input.dispatchEvent(new Event('change')); \
           return png.length; })()",
    );
    let size = sent.as_u64().expect("the PNG's size");
    let src = browser.wait_for(
        &b,
        "the image received",
        &format!(
            "[...document.querySelectorAll('#log > .binary')] \
             .find(e => e.textContent.includes('[binary, {size} bytes]')) \
             ?.querySelector('img')?.src ?? null"
        ),
    );
    assert!(
        src.as_str().is_some_and(|s| s.starts_with("blob:")),
        "{src}"
    );

    // Forty three-line messages: tab B's log keeps the newest in view.
    browser.eval(
        &a,
        "for (let i = 0; i < 40; i++) ws.send(`message ${i}\\nsecond line\\nthird line`)",
    );
    browser.wait_for(
        &b,
        "the last message",
        "[...document.querySelectorAll('#log > .chat')].some(e => e.textContent.includes('message 39'))",
    );
    thread::sleep(Duration::from_millis(200));
    let gap = browser.eval(
        &b,
        "(() => { const l = document.getElementById('log'); \
           return l.scrollHeight - l.scrollTop - l.clientHeight; })()",
    );
    assert!(
        gap.as_f64().is_some_and(|g| g < 5.0),
        "the log stopped following: {gap}"
    );

    // Enter while disconnected says what to do.
    browser.click(&a, "close");
    browser.wait_status(&a, "CLOSED");
    browser.type_and_enter(&a, "anyone there?");
    browser.wait_log_line(&a, "not connected: press Connect first");
    browser.screenshot(&b, "messages");
}

/// SIGTERM stops the server gracefully: the page sees close code 1001 with
/// `wasClean` true (the page marks a clean close as a "system" line, an
/// unclean one as an "error"), and the server exits with status 0.
fn a_stopping_server_closes_the_page_with_1001_cleanly() {
    let mut server = ServerProcess::start(&[]);
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let page = format!("http://{}/", server.addr);
    let tab = browser.open(&page);
    browser.wait_status(&tab, "OPEN");
    server.signal("TERM");
    browser.wait_status(&tab, "CLOSED");
    let line = browser.wait_log_line(&tab, "connection closed.*code 1001");
    assert!(line.contains("server stopping"), "{line}");
    let kind = browser.eval(
        &tab,
        "[...document.getElementById('log').children] \
         .find(e => /code 1001/.test(e.textContent)).className",
    );
    assert_eq!(kind, json!("system"), "the close was not clean: {line}");
    let status = server
        .wait_for_exit(Duration::from_secs(6))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
}

/// The page opened from disk connects to ws://127.0.0.1:8002/, wschat's
/// default address: its socket's URL says so whatever is on that port, and
/// when the port is free a wschat started there chats with it.
fn page_from_disk_uses_default_address() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/index.html");
    assert!(file.is_file(), "{} is missing", file.display());
    let port_free = TcpListener::bind("127.0.0.1:8002").is_ok();
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let _server = port_free.then(DefaultPortServer::start);
    let tab = browser.open(&format!("file://{}", file.display()));
    browser.wait_for(
        &tab,
        "the page's socket",
        "typeof ws === 'object' && ws !== null",
    );
    assert_eq!(browser.eval(&tab, "ws.url"), json!("ws://127.0.0.1:8002/"));
    assert_eq!(
        browser.eval(&tab, "document.getElementById('server').textContent"),
        json!("ws://127.0.0.1:8002/")
    );
    if port_free {
        browser.wait_status(&tab, "OPEN");
        browser.type_and_enter(&tab, "hello from disk");
        browser.wait_log_line(&tab, "^ID\\d+: hello from disk$");
    }
}

/// `wschat --listen 127.0.0.1:8002`, killed when dropped.
struct DefaultPortServer(Child);

impl DefaultPortServer {
    fn start() -> DefaultPortServer {
        let child = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", "127.0.0.1:8002"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wschat");
        let mut server = DefaultPortServer(child);
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect("127.0.0.1:8002").is_err() {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("wschat --listen 127.0.0.1:8002 exited: {status}");
            }
            assert!(Instant::now() < deadline, "wschat did not listen on 8002");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for DefaultPortServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chapter 14's recipe, run as written: three wschat processes sharing one
/// room through a real Redis, behind nginx with the configuration in
/// `docs/nginx/wschat-three.conf` (its ports swapped for free ones), and
/// the page chatting across them.
fn the_page_chats_across_three_processes_behind_nginx() {
    let test = "the_page_chats_across_three_processes_behind_nginx";
    let Some(nginx) = find_nginx() else {
        skip(
            test,
            "no nginx (/usr/sbin/nginx); `apt-get install nginx` runs it",
        );
        return;
    };
    let Some(redis) = RedisProcess::start(test, &[]) else {
        return;
    };
    let servers: Vec<ServerProcess> = (0..3)
        .map(|_| ServerProcess::start(&["--redis", &redis.url()]))
        .collect();
    let proxy = Nginx::start(&nginx, &servers);
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let page = format!("http://127.0.0.1:{}/", proxy.port);
    let tabs: Vec<Tab> = (0..3)
        .map(|_| {
            let tab = browser.open(&page);
            browser.wait_status(&tab, "OPEN");
            tab
        })
        .collect();
    // least_conn: the three long-lived connections went to three processes.
    for server in &servers {
        assert!(server.wait_for_log("connected (1 client)"));
        assert_eq!(server.count_log(" connected ("), 1, "one tab per process");
    }
    let text = "hello across three processes";
    browser.type_and_enter(&tabs[0], text);
    for tab in &tabs {
        browser.wait_log_line(tab, &format!("^ID\\d+: {}$", regex_escape(text)));
    }
    browser.type_and_enter(&tabs[2], "and back");
    browser.wait_log_line(&tabs[0], "^ID\\d+: and back$");
}

fn find_nginx() -> Option<PathBuf> {
    let fixed = Path::new("/usr/sbin/nginx");
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// nginx with chapter 14's configuration, in a directory of its own;
/// stopped, and the directory removed, when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(program: &Path, servers: &[ServerProcess]) -> Nginx {
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/nginx/wschat-three.conf");
        let mut config = std::fs::read_to_string(&recipe).expect("docs/nginx/wschat-three.conf");
        let port = own_port();
        config = config.replace(
            "listen 127.0.0.1:8080;",
            &format!("listen 127.0.0.1:{port};"),
        );
        for (i, server) in servers.iter().enumerate() {
            let from = format!("server 127.0.0.1:810{};", i + 1);
            assert!(config.contains(&from), "the recipe has no {from}");
            config = config.replace(&from, &format!("server {};", server.addr));
        }
        let dir = std::env::temp_dir().join(format!("wschat-nginx-{}-{port}", std::process::id()));
        for sub in ["logs", "temp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("nginx directory");
        }
        let file = dir.join("wschat-three.conf");
        std::fs::write(&file, config).expect("write the nginx configuration");
        let child = Command::new(program)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&file)
            .args(["-e", "logs/error.log", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log =
                    std::fs::read_to_string(nginx.dir.join("logs/error.log")).unwrap_or_default();
                panic!("nginx exited: {status}\n{log}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master process stops its workers before it
    /// exits. Killed outright, it would leave a worker behind, still
    /// listening, its parent gone.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + TIMEOUT;
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
