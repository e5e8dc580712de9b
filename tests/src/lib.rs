//! `herald-tests`: the harness for Herald's end-to-end tests, which start the
//! real `herald` binary on `127.0.0.1:0` and check it against the wire contract
//! (`DESIGN.md`) with ordinary clients: WebSocket frames and HTTP requests.
//!
//! The tests themselves are test targets of the `herald` package (`e2e`, in
//! this folder's `e2e/`, and `crates/herald/tests/client`), so Cargo builds
//! the binary before them and gives its path to each test target as
//! `CARGO_BIN_EXE_herald`; a target hands it to [`Herald::under_test`] once.
//!
//! # Layout
//!
//! - [`Herald`]: the binary under test: runs it (`--help`, start-up
//!   failures), reads its first line, starts a [`Hub`].
//! - [`Hub`]: one running `herald serve` process (addresses, SIGTERM,
//!   SIGKILL, its stderr for failure messages).
//! - [`WsClient`]: a WebSocket client that reads JSON frames with a timeout.
//! - [`Http`]: JSON over HTTP with `reqwest`.
//! - [`Redis`]: a `redis-server` on a free port, for the Redis engine.
//! - [`deflate_client`]: a raw WebSocket client that speaks `permessage-deflate`.
//!
//! # Rules the tests follow
//!
//! Every network await is bounded by a timeout. Tests synchronise on frames
//! (`welcome`, `ack`, `subscribed`, `replay_complete`) or on HTTP answers,
//! never on a sleep. Nothing uses a fixed port.

pub mod deflate_client;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::{SinkExt, StreamExt};
use herald_protocol::ServerMessage;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod redis;

pub use redis::Redis;

/// How long a single frame or HTTP answer may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `herald serve` may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The variable that points the tests at another `herald` build.
pub const HERALD_BIN: &str = "HERALD_BIN";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `herald` binary the tests run.
#[derive(Debug, Clone)]
pub struct Herald {
    bin: PathBuf,
}

impl Herald {
    /// The binary at `HERALD_BIN` when that is set (to test another build),
    /// else `built`: the test target passes `env!("CARGO_BIN_EXE_herald")`,
    /// the binary Cargo built for it with the same profile and target
    /// directory.
    pub fn under_test(built: impl Into<PathBuf>) -> Herald {
        Herald::choose(std::env::var_os(HERALD_BIN), built.into())
    }

    fn choose(overridden: Option<OsString>, built: PathBuf) -> Herald {
        let bin = overridden
            .filter(|path| !path.is_empty())
            .map_or(built, PathBuf::from);
        Herald { bin }
    }

    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.bin
    }

    /// A command for the binary, with null stdin and piped stdout and
    /// stderr, killed when dropped.
    pub fn command(&self) -> Command {
        piped(Command::new(&self.bin))
    }

    /// Runs `herald ARGS` to completion (bounded by `limit`), for `--help`
    /// and start-up failures.
    pub async fn run(&self, args: &[&str], limit: Duration) -> Result<Output> {
        let child = self
            .command()
            .args(args)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("herald {args:?} did not exit within {limit:?}"))?
            .context("waiting for herald")
    }

    /// Runs `herald ARGS` with the variables `env` to completion (bounded by
    /// [`START_TIMEOUT`]): whether it succeeded, and what it said on stdout
    /// and stderr together. For refusals at start-up.
    pub async fn said(&self, args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
        let child = self
            .command()
            .args(args)
            .envs(env.iter().copied())
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let output = timeout(START_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("herald {args:?} did not exit within {START_TIMEOUT:?}"))?
            .context("waiting for herald")?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), said))
    }

    /// Runs `herald ARGS` until it prints its first line on stdout (bounded
    /// by `limit`), then stops it: for commands that run until stopped
    /// (`serve`, `tail`).
    pub async fn first_line(&self, args: &[&str], limit: Duration) -> Result<String> {
        let mut child = self
            .command()
            .args(args)
            .env_remove("RUST_LOG")
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut line = String::new();
        let read = timeout(limit, BufReader::new(stdout).read_line(&mut line)).await;
        let _ = child.start_kill();
        let _ = timeout(limit, child.wait()).await;
        read.with_context(|| format!("herald {args:?} printed no line within {limit:?}"))??;
        Ok(line)
    }

    /// Starts `herald serve --bind 127.0.0.1:0 ARGS` and waits (up to
    /// [`START_TIMEOUT`]) for its first line on stdout, `listening on
    /// http://HOST:PORT`.
    pub async fn start(&self, args: &[&str]) -> Result<Hub> {
        Hub::start(self, self.command(), args, &[]).await
    }

    /// [`Herald::start`] with environment variables set (e.g. `HERALD_*`).
    pub async fn start_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Hub> {
        Hub::start(self, self.command(), args, env).await
    }

    /// [`Herald::start`] with the soft limit on open files lowered to `soft`
    /// and the hard limit kept, as a shell's `ulimit -Sn` leaves it: the
    /// process is `sh`, which becomes `herald` (same PID) once it has set
    /// the limit.
    pub async fn start_with_open_files(&self, args: &[&str], soft: u64) -> Result<Hub> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -S -n {soft} && exec \"$0\" \"$@\""))
            .arg(&self.bin);
        Hub::start(self, piped(command), args, &[]).await
    }
}

/// `command` with null stdin and piped stdout and stderr, killed when dropped.
fn piped(mut command: Command) -> Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// One running `herald serve --bind 127.0.0.1:0 ARGS` process, started by
/// [`Herald::start`]. Dropping it kills the process.
#[derive(Debug)]
pub struct Hub {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// The tasks that drain the child's pipes; aborted on drop.
    drains: JoinSet<()>,
}

impl Hub {
    async fn start(
        herald: &Herald,
        mut command: Command,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Hub> {
        let mut child = command
            .arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .spawn()
            .with_context(|| format!("spawning {}", herald.path().display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let stdout_buf = Arc::new(Mutex::new(String::new()));
        let mut drains = JoinSet::new();
        drains.spawn(drain(stderr, Arc::clone(&stderr_buf)));

        let mut lines = BufReader::new(stdout);
        let first = timeout(START_TIMEOUT, async {
            let mut line = String::new();
            let read = lines.read_line(&mut line).await?;
            Ok::<_, std::io::Error>((read, line))
        })
        .await;
        let addr = match first {
            Ok(Ok((read, line))) if read > 0 => {
                let addr = line
                    .trim()
                    .strip_prefix("listening on http://")
                    .map(|a| a.trim_end_matches('/').to_owned());
                match addr {
                    Some(addr) => addr,
                    None => {
                        let _ = child.start_kill();
                        bail!(
                            "herald's first stdout line is {line:?}, expected `listening on http://HOST:PORT`; stderr:\n{}",
                            snapshot(&stderr_buf)
                        );
                    }
                }
            }
            other => {
                let _ = child.start_kill();
                let status = timeout(Duration::from_secs(2), child.wait()).await;
                bail!(
                    "herald serve {args:?} did not print `listening on` ({other:?}, exit {status:?}); stderr:\n{}",
                    snapshot(&stderr_buf)
                );
            }
        };
        drains.spawn(drain(lines, Arc::clone(&stdout_buf)));
        Ok(Hub {
            child,
            addr,
            stderr: stderr_buf,
            stdout: stdout_buf,
            drains,
        })
    }

    /// `HOST:PORT` the hub is bound to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://HOST:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://HOST:PORT{path}`; `path` starts with `/`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// An HTTP helper pointed at this hub.
    pub fn http(&self) -> Http {
        Http::new(self.http_url())
    }

    /// Connects a WebSocket client to `path` and reads its `welcome`.
    pub async fn ws(&self, path: &str) -> Result<WsClient> {
        WsClient::connect(&self.ws_url(path)).await
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process by its PID.
    pub async fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().context("herald has exited")?;
        let status = timeout(
            DEFAULT_TIMEOUT,
            Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status(),
        )
        .await
        .context("kill did not return")??;
        ensure!(status.success(), "kill -{signal} {pid}: {status}");
        Ok(())
    }

    /// What the hub wrote to stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        snapshot(&self.stderr)
    }

    /// What the hub wrote to stdout after its first line so far.
    pub fn stdout(&self) -> String {
        snapshot(&self.stdout)
    }

    /// Kills the process with SIGKILL and waits for it.
    pub async fn kill9(&mut self) -> Result<ExitStatus> {
        self.child.start_kill().context("SIGKILL")?;
        let status = timeout(DEFAULT_TIMEOUT, self.child.wait())
            .await
            .context("herald did not die after SIGKILL")?
            .context("waiting for herald")?;
        self.read_to_the_end().await;
        Ok(status)
    }

    /// Sends SIGTERM (through `kill -TERM PID`) without waiting.
    pub async fn sigterm(&self) -> Result<()> {
        let pid = self.pid().context("herald has already exited")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("running kill -TERM")?;
        ensure!(status.success(), "kill -TERM {pid} failed: {status}");
        Ok(())
    }

    /// Waits up to `limit` for the process to exit; returns its exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        match timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for herald")?;
                self.read_to_the_end().await;
                Ok(status)
            }
            Err(_) => bail!(
                "herald did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; returns
    /// its exit status.
    pub async fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        self.sigterm().await?;
        self.wait_exit(limit).await
    }

    /// Once the process has exited, waits (bounded) until what it wrote
    /// last is read from its pipes, so that [`Hub::stderr`] and
    /// [`Hub::stdout`] hold all of it.
    async fn read_to_the_end(&mut self) {
        let drained = async { while self.drains.join_next().await.is_some() {} };
        let _ = timeout(Duration::from_secs(2), drained).await;
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.drains.abort_all();
    }
}

fn snapshot(buf: &Mutex<String>) -> String {
    buf.lock().map(|s| s.clone()).unwrap_or_default()
}

async fn drain(reader: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut reader = reader;
    let mut chunk = vec![0u8; 8192];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        if let Ok(mut buf) = into.lock() {
            // Keep the last ~1 MiB: enough for a failure message.
            if buf.len() > 1 << 20 {
                let cut = buf.len() - (1 << 19);
                let cut = (cut..buf.len())
                    .find(|i| buf.is_char_boundary(*i))
                    .unwrap_or(0);
                buf.drain(..cut);
            }
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}

/// The `type` of a server frame, or `""`.
pub fn frame_type(frame: &Value) -> &str {
    frame.get("type").and_then(Value::as_str).unwrap_or("")
}

/// A frame's `seq` as a number.
pub fn seq_of(frame: &Value) -> Option<u64> {
    frame.get("seq").and_then(Value::as_u64)
}

/// Whether `frame` is an `event` on `topic`.
pub fn is_event_on(frame: &Value, topic: &str) -> bool {
    frame_type(frame) == "event" && frame.get("topic").and_then(Value::as_str) == Some(topic)
}

/// The value of the sample `name` (with its labels, e.g.
/// `herald_errors_total{code="too_large"}`) in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A WebSocket test client. Every read is bounded by [`WsClient::timeout`].
#[derive(Debug)]
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `welcome` frame, when [`WsClient::connect`] read it.
    pub welcome: Value,
    /// The bound on each read.
    pub timeout: Duration,
    /// Whether [`WsClient::recv_frame`] returns app-level `ping` frames
    /// (otherwise it answers them with `pong` and skips them).
    pub keep_pings: bool,
}

impl WsClient {
    /// Connects and reads the `welcome` frame (which must come first).
    pub async fn connect(url: &str) -> Result<WsClient> {
        let mut client = WsClient::connect_raw(url).await?;
        let welcome = client.recv_frame().await.context("waiting for welcome")?;
        ensure!(
            frame_type(&welcome) == "welcome",
            "first frame is not welcome: {welcome}"
        );
        client.welcome = welcome;
        Ok(client)
    }

    /// Connects without reading anything.
    pub async fn connect_raw(url: &str) -> Result<WsClient> {
        let (stream, _response) = timeout(DEFAULT_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .with_context(|| format!("connecting to {url} timed out"))?
            .with_context(|| format!("connecting to {url}"))?;
        Ok(WsClient {
            stream,
            welcome: Value::Null,
            timeout: DEFAULT_TIMEOUT,
            keep_pings: false,
        })
    }

    /// The `session_id` from `welcome`.
    pub fn session_id(&self) -> String {
        self.welcome
            .get("session_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        self.send_text(value.to_string()).await
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        timeout(self.timeout, self.stream.send(Message::text(text.into())))
            .await
            .context("sending a frame timed out")?
            .context("sending a frame")
    }

    /// Sends a raw WebSocket message (binary, ping, close…).
    pub async fn send_message(&mut self, message: Message) -> Result<()> {
        timeout(self.timeout, self.stream.send(message))
            .await
            .context("sending a message timed out")?
            .context("sending a message")
    }

    /// The next JSON text frame. App-level `ping` frames are answered with
    /// `pong` and skipped unless [`WsClient::keep_pings`] is set. A close or
    /// the end of the stream is an error.
    pub async fn recv_frame(&mut self) -> Result<Value> {
        loop {
            let message = timeout(self.timeout, self.stream.next())
                .await
                .with_context(|| format!("no frame within {:?}", self.timeout))?;
            let text = match message {
                None => bail!("the connection ended"),
                Some(Err(e)) => bail!("the connection failed: {e}"),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => bail!("the connection was closed: {frame:?}"),
                Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
                Some(Ok(_)) => continue, // protocol ping/pong: tungstenite answers pings
            };
            let value: Value = serde_json::from_str(text.as_str())
                .with_context(|| format!("server frame is not JSON: {}", text.as_str()))?;
            if frame_type(&value) == "ping" && !self.keep_pings {
                self.send_json(&json!({"action": "pong"})).await?;
                continue;
            }
            return Ok(value);
        }
    }

    /// The next frame, decoded as a [`ServerMessage`] (unknown types are errors here).
    pub async fn recv_message(&mut self) -> Result<ServerMessage> {
        let frame = self.recv_frame().await?;
        ServerMessage::decode(&frame.to_string())
            .with_context(|| format!("frame does not decode as a ServerMessage: {frame}"))?
            .with_context(|| format!("unknown frame type: {frame}"))
    }

    /// Reads frames until one satisfies `pred` (skipping the others) and
    /// returns it. The whole wait is bounded by [`WsClient::timeout`].
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let (found, _skipped) = self.recv_collect_until(pred).await?;
        Ok(found)
    }

    /// Like [`WsClient::recv_until`], also returning the frames read before.
    pub async fn recv_collect_until(
        &mut self,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Vec<Value>)> {
        let deadline = Instant::now() + self.timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match timeout(left, self.recv_frame()).await {
                Ok(frame) => frame.with_context(|| format!("frames before: {skipped:?}"))?,
                Err(_) => bail!(
                    "no matching frame within {:?}; frames read: {skipped:?}",
                    self.timeout
                ),
            };
            if pred(&frame) {
                return Ok((frame, skipped));
            }
            skipped.push(frame);
        }
    }

    /// Reads `n` `event` frames (skipping other frame types).
    pub async fn recv_events(&mut self, n: usize) -> Result<Vec<Value>> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            events.push(
                self.recv_until(|f| frame_type(f) == "event")
                    .await
                    .with_context(|| format!("after {} of {n} events", events.len()))?,
            );
        }
        Ok(events)
    }

    /// Reads until the server closes; returns the close code and reason.
    /// Frames before the close are skipped. A connection that ends without a
    /// close frame is an error.
    pub async fn expect_close(&mut self) -> Result<(u16, String)> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = timeout(left, self.stream.next())
                .await
                .with_context(|| format!("no close within {:?}", self.timeout))?;
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ok((u16::from(frame.code), frame.reason.as_str().to_owned()));
                }
                Some(Ok(Message::Close(None))) => {
                    return Ok((u16::from(CloseCode::Status), String::new()));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("the connection failed before a close frame: {e}"),
                None => bail!("the connection ended without a close frame"),
            }
        }
    }

    /// The first thing the hub says on a new connection: its greeting
    /// (`Ok`), or the close it was refused with (`Err(code, reason)`).
    pub async fn opening(&mut self) -> Result<Result<Value, (u16, String)>> {
        let message = timeout(self.timeout, self.stream.next())
            .await
            .with_context(|| format!("the hub said nothing within {:?}", self.timeout))?;
        match message {
            Some(Ok(Message::Text(text))) => Ok(Ok(serde_json::from_str(text.as_str())?)),
            Some(Ok(Message::Close(Some(frame)))) => Ok(Err((
                u16::from(frame.code),
                frame.reason.as_str().to_owned(),
            ))),
            other => bail!("neither a greeting nor a close: {other:?}"),
        }
    }

    /// Reads until the connection ends in any way (close frame, EOF or
    /// error); frames before are skipped. Returns the close code if there was one.
    pub async fn expect_end(&mut self) -> Result<Option<u16>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = timeout(left, self.stream.next())
                .await
                .with_context(|| format!("the connection did not end within {:?}", self.timeout))?;
            match message {
                Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// Sends `subscribe` for `topics` (with extra fields merged in) and waits
    /// for a `subscribed` frame for each; returns them in the order of `topics`.
    pub async fn subscribe_with(&mut self, topics: &[&str], extra: Value) -> Result<Vec<Value>> {
        let mut frame = json!({"action": "subscribe", "topics": topics});
        if let (Some(frame), Value::Object(extra)) = (frame.as_object_mut(), extra) {
            frame.extend(extra);
        }
        self.send_json(&frame).await?;
        self.expect_subscribed(topics).await
    }

    /// [`WsClient::subscribe_with`] without extra fields.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<Vec<Value>> {
        self.subscribe_with(topics, json!({})).await
    }

    /// Waits for a `subscribed` frame for each of `topics`, in any order
    /// (other frames are skipped); returns them in the order of `topics`.
    pub async fn expect_subscribed(&mut self, topics: &[&str]) -> Result<Vec<Value>> {
        let mut found: Vec<Option<Value>> = vec![None; topics.len()];
        while found.iter().any(Option::is_none) {
            let frame = self
                .recv_until(|f| frame_type(f) == "subscribed")
                .await
                .with_context(|| format!("waiting for subscribed to {topics:?}"))?;
            let topic = frame
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(i) = topics.iter().position(|t| *t == topic) {
                found[i] = Some(frame);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Sends an app-level `ping` and waits for the `pong`: a barrier proving
    /// that the hub has processed every frame sent before.
    pub async fn barrier(&mut self) -> Result<Vec<Value>> {
        self.send_json(&json!({"action": "ping"})).await?;
        let (_pong, before) = self.recv_collect_until(|f| frame_type(f) == "pong").await?;
        Ok(before)
    }

    /// Closes the connection politely (errors ignored).
    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(1), self.stream.close(None)).await;
    }
}

/// JSON over HTTP.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

/// An HTTP answer: status and body (JSON when it parses, else a JSON string).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    /// The `Retry-After` header, when there is one.
    pub retry_after: Option<String>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The reply, if its status is 2xx; else an error naming both.
    pub fn ok(self) -> Result<Reply> {
        ensure!(
            (200..300).contains(&self.status),
            "HTTP {}: {}",
            self.status,
            self.text
        );
        Ok(self)
    }
}

impl Http {
    /// A helper for `base` (`http://HOST:PORT`).
    pub fn new(base: String) -> Http {
        let client = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Http { client, base }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply> {
        let response = request.send().await.context("HTTP request")?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.context("reading the HTTP body")?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Ok(Reply {
            status,
            content_type,
            retry_after,
            body,
            text,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Reply> {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `POST path` with a raw body and `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<Reply> {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// Publishes one event (`POST /api/v1/events`) and returns the receipt
    /// `{id, topic, seq}`; anything but a 2xx is an error.
    pub async fn publish(&self, event: &Value) -> Result<Value> {
        let reply = self.post("/api/v1/events", event).await?;
        ensure!(
            (200..300).contains(&reply.status),
            "publishing {event} answered {}: {}",
            reply.status,
            reply.text
        );
        Ok(reply.body)
    }

    /// Publishes `{topic, event_type, data}` and returns the receipt's seq.
    pub async fn publish_simple(&self, topic: &str, event_type: &str, data: Value) -> Result<u64> {
        let receipt = self
            .publish(&json!({"topic": topic, "event_type": event_type, "data": data}))
            .await?;
        seq_of(&receipt).with_context(|| format!("receipt without seq: {receipt}"))
    }

    /// Publishes a batch (an array) and returns the receipts.
    pub async fn publish_batch(&self, events: &[Value]) -> Result<Vec<Value>> {
        let reply = self
            .post("/api/v1/events", &Value::Array(events.to_vec()))
            .await?;
        ensure!(
            (200..300).contains(&reply.status),
            "publishing a batch answered {}: {}",
            reply.status,
            reply.text
        );
        match reply.body {
            Value::Array(receipts) => Ok(receipts),
            other => bail!("a batch must be answered by an array, got {other}"),
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so random schedules are seeded
/// and reproducible without another dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `limit` passes. For
/// states only visible over HTTP (a connection count reaching zero); frames
/// are awaited, not polled.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            bail!("{what}: not true within {limit:?} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a raw TCP connection and performs the WebSocket upgrade by hand for
/// `path`, returning the stream right after the `101` response. Used for a
/// client that never answers protocol pings.
pub async fn raw_ws_upgrade(addr: &str, path: &str) -> Result<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("TCP connect timed out")?
        .context("TCP connect")?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // Read the response head byte by byte so no frame bytes are consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    timeout(DEFAULT_TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await?;
            if n == 0 {
                return Err(std::io::Error::other("EOF in the upgrade response"));
            }
            head.push(byte[0]);
        }
        Ok(())
    })
    .await
    .context("upgrade response timed out")??;
    let head = String::from_utf8_lossy(&head);
    ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herald_bin_overrides_the_built_binary_unless_empty() {
        let built = PathBuf::from("/built/herald");
        let chosen = |overridden: Option<&str>| {
            Herald::choose(overridden.map(OsString::from), built.clone())
                .path()
                .to_path_buf()
        };
        assert_eq!(chosen(None), built);
        assert_eq!(chosen(Some("")), built);
        assert_eq!(
            chosen(Some("/other/herald")),
            PathBuf::from("/other/herald")
        );
    }
}
