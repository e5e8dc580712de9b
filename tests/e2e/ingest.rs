//! Unix datagram ingest (H5, server side): `--unix-socket PATH` takes one
//! JSON event per datagram in the `POST /api/v1/events` shape; malformed
//! datagrams are counted and never fatal; the socket file's life (stale
//! replaced, live refused, non-socket refused, mode, removal on SIGTERM).

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use herald_tests::{
    DEFAULT_TIMEOUT, Hub, WsClient, eventually, frame_type, is_event_on, metric, seq_of,
};
use serde_json::{Value, json};

use crate::{event, herald, seqs_on};

/// A fresh directory and the socket path inside it.
pub(crate) fn socket_in_tempdir() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("herald.sock");
    Ok((dir, path))
}

/// Starts a hub ingesting on `path`, with `extra` flags, and waits until the
/// socket takes datagrams.
///
/// `herald serve` prints `listening on` before it binds the Unix socket (see
/// `a_regular_file_at_the_socket_path_is_refused_before_claiming_to_listen`),
/// so the line alone does not prove the socket is there. A zero-length
/// datagram is the hub's own liveness probe (it is neither published nor
/// counted); it succeeds once the hub reads the socket.
pub(crate) async fn hub_on(path: &Path, extra: &[&str]) -> Result<Hub> {
    let path_str = path.to_str().context("the socket path is not UTF-8")?;
    let mut args = vec!["--unix-socket", path_str];
    args.extend_from_slice(extra);
    let hub = herald().start(&args).await?;
    eventually(
        DEFAULT_TIMEOUT,
        "the unix socket takes datagrams",
        || async {
            let probe = UnixDatagram::unbound()?;
            Ok(probe.send_to(b"", path).is_ok().then_some(()))
        },
    )
    .await
    .with_context(|| format!("hub stderr:\n{}", hub.stderr()))?;
    Ok(hub)
}

/// Sends one datagram to `path` from an unbound socket.
pub(crate) fn send(path: &Path, bytes: &[u8]) -> Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    let sent = socket.send_to(bytes, path).with_context(|| {
        format!(
            "sending a {}-byte datagram to {}",
            bytes.len(),
            path.display()
        )
    })?;
    ensure!(sent == bytes.len(), "sent {sent} of {} bytes", bytes.len());
    Ok(())
}

/// Sends one event as a datagram.
fn send_event(path: &Path, body: &Value) -> Result<()> {
    send(path, body.to_string().as_bytes())
}

/// A client subscribed to `topic`.
async fn subscriber(hub: &Hub, topic: &str) -> Result<WsClient> {
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&[topic]).await?;
    Ok(client)
}

#[tokio::test]
async fn unix_datagrams_reach_a_subscriber_in_order_with_seqs() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut client = subscriber(&hub, "execution:dgram").await?;
    const N: u64 = 25;
    for i in 0..N {
        send_event(
            &path,
            &event("execution:dgram", "execution.progress", json!({"i": i})),
        )?;
    }
    let events = client.recv_events(N as usize).await?;
    ensure!(
        seqs_on(&events, "execution:dgram") == (1..=N).collect::<Vec<_>>(),
        "{events:?}"
    );
    for (i, event) in events.iter().enumerate() {
        ensure!(event["data"] == json!({"i": i}), "event {i} is {event}");
        ensure!(event["event_type"] == "execution.progress", "{event}");
        ensure!(event["id"].is_string(), "{event}");
        ensure!(event["timestamp"].is_u64(), "{event}");
    }
    Ok(())
}

#[tokio::test]
async fn unix_datagrams_into_a_durable_store_are_delivered_and_counted_as_published() -> Result<()>
{
    // Datagrams are published without waiting for the store; they must still
    // be delivered once durable and counted in herald_events_published_total.
    let (dir, path) = socket_in_tempdir()?;
    let db = dir.path().join("ingest.db");
    let store = format!("sqlite:{}", db.display());
    let hub = hub_on(&path, &["--store", &store]).await?;
    let mut client = subscriber(&hub, "execution:durable").await?;
    const N: u64 = 10;
    for i in 0..N {
        send_event(
            &path,
            &event("execution:durable", "execution.progress", json!({"i": i})),
        )?;
    }
    let events = client.recv_events(N as usize).await?;
    ensure!(
        seqs_on(&events, "execution:durable") == (1..=N).collect::<Vec<_>>(),
        "{events:?}"
    );
    let reply = hub.http().get("/metrics").await?;
    let published = metric(&reply.text, "herald_events_published_total")
        .with_context(|| format!("no herald_events_published_total:\n{}", reply.text))?;
    ensure!(
        published >= N as f64,
        "published counter is {published}, expected {N}"
    );
    Ok(())
}

#[tokio::test]
async fn a_datagram_takes_an_event_as_large_as_http_would_and_no_larger() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &["--max-body-size", "128KiB"]).await?;
    let mut client = subscriber(&hub, "execution:big").await?;
    // 100 KB: over 64 KiB, where a fixed-size datagram read would cut it.
    let large = json!({"blob": "x".repeat(100_000)});
    send_event(
        &path,
        &event("execution:big", "execution.progress", large.clone()),
    )?;
    let too_large = json!({"blob": "x".repeat(140_000)});
    send_event(
        &path,
        &event("execution:big", "execution.progress", too_large),
    )?;
    send_event(
        &path,
        &event(
            "execution:big",
            "execution.progress",
            json!({"after": true}),
        ),
    )?;
    let events = client.recv_events(2).await?;
    ensure!(
        events[0]["data"] == large,
        "the 100 KB event changed on the way"
    );
    ensure!(events[1]["data"] == json!({"after": true}), "{}", events[1]);
    let reply = hub.http().get("/metrics").await?;
    ensure!(
        metric(&reply.text, "herald_unix_datagrams_rejected_total") == Some(1.0),
        "{}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn seed_003_state_machines_publish_unchanged_and_dashboards_get_their_state() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut live = subscriber(&hub, "machine:*").await?;
    // What the seed's `send_event("state_change", "worker-123", ...)` sends.
    for (state, previous) in [("processing", "idle"), ("done", "processing")] {
        let datagram = json!({"type": "state_change", "machine_id": "worker-123",
            "state": state, "previous_state": previous, "timestamp": 1729845678.123,
            "data": {"job_id": "task-456"}});
        send_event(&path, &datagram)?;
    }
    let first = live
        .recv_until(|f| is_event_on(f, "machine:worker-123"))
        .await?;
    ensure!(
        first["event_type"] == "state.changed"
            && first["data"]["state"] == "processing"
            && first["timestamp"] == json!(1_729_845_678_123u64),
        "{first}"
    );
    live.recv_until(|f| is_event_on(f, "machine:worker-123"))
        .await?;
    // A dashboard connecting now gets every machine's current state first.
    let mut dashboard = hub.ws("/ws/events?snapshot=true").await?;
    let snapshot = dashboard
        .recv_until(|f| frame_type(f) == "snapshot")
        .await?;
    ensure!(
        snapshot["topic"] == "machine:worker-123"
            && snapshot["events"][0]["data"]["state"] == "done"
            && snapshot["events"].as_array().map(Vec::len) == Some(1),
        "{snapshot}"
    );
    Ok(())
}

#[tokio::test]
async fn unix_datagram_keeps_the_optional_fields_of_the_events_shape() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut client = subscriber(&hub, "machine:worker-1").await?;
    let id = "0193c7a2-0000-7000-8000-000000000001";
    send_event(
        &path,
        &json!({
            "topic": "machine:worker-1", "event_type": "state.changed",
            "data": {"state": "busy"}, "priority": "critical", "key": "worker-1",
            "source": "unit-test", "id": id, "timestamp": 1_729_845_678_123_u64
        }),
    )?;
    let got = client
        .recv_until(|f| is_event_on(f, "machine:worker-1"))
        .await?;
    ensure!(got["priority"] == "critical", "{got}");
    ensure!(got["key"] == "worker-1", "{got}");
    ensure!(got["source"] == "unit-test", "{got}");
    ensure!(got["id"] == id, "{got}");
    ensure!(got["timestamp"] == 1_729_845_678_123_u64, "{got}");
    ensure!(got["data"] == json!({"state": "busy"}), "{got}");
    ensure!(seq_of(&got) == Some(1), "{got}");
    Ok(())
}

#[tokio::test]
async fn malformed_unix_datagrams_are_counted_and_the_hub_keeps_working() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut client = subscriber(&hub, "execution:after").await?;
    let garbage: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    let malformed: [&[u8]; 6] = [
        b"not json at all",
        br#"{"event_type":"execution.progress","data":{}}"#,
        br#"{"topic":"Bad Topic!","event_type":"execution.progress"}"#,
        br#"{"topic":"execution:x","event_type":"NotDotted"}"#,
        // The fields as an array: an event is an object, as over HTTP.
        br#"["execution:after","execution.progress",{},"high",null,null,null,null]"#,
        &garbage,
    ];
    for bytes in malformed {
        send(&path, bytes)?;
    }
    // Datagrams are read in order: once this one is delivered, every
    // malformed one before it has been handled.
    send_event(
        &path,
        &event(
            "execution:after",
            "execution.completed",
            json!({"ok": true}),
        ),
    )?;
    let got = client
        .recv_until(|f| is_event_on(f, "execution:after"))
        .await?;
    ensure!(got["data"] == json!({"ok": true}), "{got}");
    ensure!(seq_of(&got) == Some(1), "{got}");

    let reply = hub.http().get("/metrics").await?;
    ensure!(reply.status == 200, "{}", reply.text);
    let rejected = metric(&reply.text, "herald_unix_datagrams_rejected_total")
        .with_context(|| format!("no herald_unix_datagrams_rejected_total:\n{}", reply.text))?;
    ensure!(
        rejected == malformed.len() as f64,
        "rejected {rejected}, expected {}:\n{}",
        malformed.len(),
        reply.text
    );
    if let Some(total) = metric(&reply.text, "herald_unix_datagrams_total") {
        ensure!(
            total == (malformed.len() + 1) as f64,
            "herald_unix_datagrams_total is {total}:\n{}",
            reply.text
        );
    }
    eventually(Duration::from_secs(5), "the rejections are logged", || {
        let stderr = hub.stderr().to_lowercase();
        async move { Ok(stderr.contains("malformed datagram").then_some(())) }
    })
    .await?;
    let health = hub.http().get("/health").await?;
    ensure!(health.status == 200, "{}", health.text);
    Ok(())
}

#[tokio::test]
async fn stale_socket_file_left_by_a_killed_hub_is_replaced() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let mut first = hub_on(&path, &[]).await?;
    first.kill9().await?;
    let meta = std::fs::symlink_metadata(&path).context("kill -9 left no socket file")?;
    ensure!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );

    let hub = hub_on(&path, &[]).await?;
    let mut client = subscriber(&hub, "run:stale").await?;
    send_event(
        &path,
        &event("run:stale", "step.completed", json!({"n": 1})),
    )?;
    let got = client.recv_until(|f| is_event_on(f, "run:stale")).await?;
    ensure!(got["data"] == json!({"n": 1}), "{got}");
    Ok(())
}

/// Runs `herald serve --unix-socket PATH`, which must refuse to start;
/// its stderr, which must name the path.
async fn refused_start_on(path: &Path) -> Result<String> {
    let path_str = path.to_str().context("not UTF-8")?;
    let output = herald()
        .run(
            &["serve", "--bind", "127.0.0.1:0", "--unix-socket", path_str],
            Duration::from_secs(20),
        )
        .await?;
    ensure!(!output.status.success(), "a hub started on {path_str}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(
        stderr.contains(path_str),
        "stderr does not name the socket:\n{stderr}"
    );
    Ok(stderr)
}

#[tokio::test]
async fn a_live_socket_is_refused_and_its_hub_keeps_receiving() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    refused_start_on(&path).await?;

    let mut client = subscriber(&hub, "run:live").await?;
    send_event(&path, &event("run:live", "step.completed", json!({})))?;
    client.recv_until(|f| is_event_on(f, "run:live")).await?;
    Ok(())
}

#[tokio::test]
async fn another_programs_stream_socket_at_the_path_is_left_alone_and_the_start_refused()
-> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    // Not a datagram socket: a probe cannot tell whether it is in use.
    let _listener = std::os::unix::net::UnixListener::bind(&path)?;
    let stderr = refused_start_on(&path).await?;
    ensure!(
        stderr.contains("could not tell"),
        "stderr does not say why:\n{stderr}"
    );
    // Still the program's: it takes a connection.
    std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("{} was removed or replaced", path.display()))?;
    Ok(())
}

#[tokio::test]
async fn datagrams_the_hub_refuses_to_publish_are_counted_and_logged_a_few_a_second() -> Result<()>
{
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut client = subscriber(&hub, "run:reused").await?;
    let first = json!({"topic": "run:reused", "event_type": "step.completed",
        "id": "reused-1", "data": {"n": 1}});
    send_event(&path, &first)?;
    // Well-formed, but the id names another event: refused by the store.
    for n in 2..=101 {
        send_event(
            &path,
            &json!({"topic": "run:reused", "event_type": "step.completed",
                "id": "reused-1", "data": {"n": n}}),
        )?;
    }
    send_event(
        &path,
        &event("run:reused", "step.completed", json!({"last": true})),
    )?;
    let got = client
        .recv_until(|f| is_event_on(f, "run:reused") && f["data"]["last"] == json!(true))
        .await?;
    ensure!(
        seq_of(&got) == Some(2),
        "the refused datagrams took seqs: {got}"
    );
    let reply = hub.http().get("/metrics").await?;
    let rejected = metric(&reply.text, "herald_unix_datagrams_rejected_total")
        .with_context(|| format!("no herald_unix_datagrams_rejected_total:\n{}", reply.text))?;
    ensure!(rejected == 100.0, "rejected {rejected}, expected 100");
    let log = eventually(
        Duration::from_secs(5),
        "the log accounts for all 100 refusals",
        || {
            let log = hub.stderr();
            async move { Ok((accounted_in_log(&log, "could not publish") == 100).then_some(log)) }
        },
    )
    .await?;
    let lines = log
        .lines()
        .filter(|line| line.contains("could not publish"))
        .count();
    ensure!(
        (1..=20).contains(&lines),
        "{lines} lines for 100 refused datagrams:\n{log}"
    );
    Ok(())
}

/// Runs `herald serve --unix-socket PATH` where PATH is a regular file.
async fn serve_on_a_regular_file() -> Result<(tempfile::TempDir, PathBuf, std::process::Output)> {
    let (dir, path) = socket_in_tempdir()?;
    std::fs::write(&path, b"precious")?;
    let path_str = path.to_str().context("not UTF-8")?.to_owned();
    let output = herald()
        .run(
            &["serve", "--bind", "127.0.0.1:0", "--unix-socket", &path_str],
            Duration::from_secs(20),
        )
        .await?;
    Ok((dir, path, output))
}

#[tokio::test]
async fn a_regular_file_at_the_socket_path_makes_serve_exit_non_zero_with_a_message() -> Result<()>
{
    let (_dir, path, output) = serve_on_a_regular_file().await?;
    ensure!(
        !output.status.success(),
        "herald serve accepted a regular file as its socket"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains(&path.display().to_string()) && stderr.contains("not a socket"),
        "stderr does not say what is wrong:\n{stderr}"
    );
    ensure!(
        std::fs::read(&path)? == b"precious",
        "the regular file was touched"
    );
    Ok(())
}

#[tokio::test]
async fn a_regular_file_at_the_socket_path_is_refused_before_claiming_to_listen() -> Result<()> {
    let (_dir, _path, output) = serve_on_a_regular_file().await?;
    ensure!(!output.status.success(), "herald serve started");
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        !stdout.contains("listening on"),
        "herald printed `listening on` and then failed, so a script would think it started:\n{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn rejected_datagrams_reach_the_log_escaped_and_a_few_a_second_at_most() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut client = subscriber(&hub, "execution:after").await?;
    // A terminal escape and a line of its own that looks like the hub's.
    let forged = b"\x1b[31mPWNED\n2026-12-06T00:00:00.000000Z  INFO herald_server::server: FORGED";
    send(&path, forged)?;
    for _ in 0..200 {
        send(&path, b"{}")?;
    }
    send_event(
        &path,
        &event("execution:after", "execution.completed", json!({})),
    )?;
    client
        .recv_until(|f| is_event_on(f, "execution:after"))
        .await?;
    // Every rejection is accounted for in the log once the burst is over:
    // logged, or counted as unlogged by a later line. The log reaches the
    // test through a pipe, so it is read once it is complete.
    let log = eventually(
        Duration::from_secs(5),
        "the log accounts for all 201 rejections",
        || {
            let log = hub.stderr();
            async move {
                Ok((accounted_in_log(&log, "rejected a malformed datagram") == 201).then_some(log))
            }
        },
    )
    .await?;
    ensure!(
        !log.contains('\x1b'),
        "a raw escape reached the log:\n{log}"
    );
    ensure!(
        !log.lines()
            .any(|line| line.starts_with("2026-12-06T00:00:00")),
        "a datagram forged a log line:\n{log}"
    );
    let rejections = log
        .lines()
        .filter(|line| line.contains("rejected a malformed datagram"))
        .count();
    ensure!(
        (1..=20).contains(&rejections),
        "{rejections} rejection lines for 201 datagrams:\n{log}"
    );
    Ok(())
}

/// Rejections the log accounts for: each line with `logged` in it, plus
/// the `unlogged=N` that lines (a summary included) carry.
fn accounted_in_log(log: &str, logged: &str) -> u64 {
    log.lines()
        .filter(|line| line.contains(logged) || line.contains("went unlogged"))
        .map(|line| {
            let this = u64::from(line.contains(logged));
            let unlogged = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("unlogged="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            this + unlogged
        })
        .sum()
}

#[tokio::test]
async fn socket_file_gets_the_mode_from_unix_socket_mode() -> Result<()> {
    for (flag, mode) in [(Some("600"), 0o600), (None, 0o660)] {
        let (_dir, path) = socket_in_tempdir()?;
        let extra: Vec<&str> = flag
            .map(|m| vec!["--unix-socket-mode", m])
            .unwrap_or_default();
        let hub = hub_on(&path, &extra).await?;
        // The hub sets the mode right after binding: allow it that instant.
        let got = eventually(DEFAULT_TIMEOUT, "the socket gets its mode", || {
            let got = std::fs::symlink_metadata(&path).map(|m| m.permissions().mode() & 0o777);
            async move { Ok(got.ok().filter(|got| *got == mode)) }
        })
        .await;
        let actual = std::fs::symlink_metadata(&path)?.permissions().mode() & 0o777;
        ensure!(
            got.is_ok(),
            "mode {actual:o}, expected {mode:o} (flag {flag:?})"
        );
        drop(hub);
    }
    Ok(())
}

#[tokio::test]
async fn socket_file_is_removed_on_sigterm() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let mut hub = hub_on(&path, &[]).await?;
    ensure!(path.exists(), "no socket file while running");
    // An HTTP answer proves the server loop, and so its SIGTERM handler, is
    // running (see `sigterm_right_after_listening_is_a_graceful_shutdown_that_removes_the_socket`).
    let health = hub.http().get("/health").await?;
    ensure!(health.status == 200, "{}", health.text);
    let status = hub.terminate(Duration::from_secs(15)).await?;
    ensure!(status.success(), "exit after SIGTERM: {status}");
    ensure!(
        std::fs::symlink_metadata(&path).is_err(),
        "{} is still there after a graceful shutdown",
        path.display()
    );
    Ok(())
}

#[tokio::test]
async fn a_hub_shutting_down_leaves_a_socket_another_process_bound_at_its_path_since() -> Result<()>
{
    use std::os::unix::fs::MetadataExt as _;
    let (_dir, path) = socket_in_tempdir()?;
    let mut hub = hub_on(&path, &[]).await?;
    let health = hub.http().get("/health").await?;
    ensure!(health.status == 200, "{}", health.text);
    // Another process took the path over (a new hub, started as this one
    // stops): its socket is not this hub's to remove.
    std::fs::remove_file(&path)?;
    let _successor = UnixDatagram::bind(&path)?;
    let inode = std::fs::symlink_metadata(&path)?.ino();
    let status = hub.terminate(Duration::from_secs(15)).await?;
    ensure!(status.success(), "exit after SIGTERM: {status}");
    let meta = std::fs::symlink_metadata(&path)
        .with_context(|| format!("{} was removed by the hub that stopped", path.display()))?;
    ensure!(meta.ino() == inode, "the successor's socket was replaced");
    Ok(())
}

#[tokio::test]
async fn sigterm_right_after_listening_is_a_graceful_shutdown_that_removes_the_socket() -> Result<()>
{
    // A supervisor may stop the hub at any moment after `listening on`;
    // SIGTERM must always be a graceful shutdown (exit 0, socket removed),
    // never the signal's default action. Several rounds: the window is short.
    for round in 0..20 {
        let (_dir, path) = socket_in_tempdir()?;
        let path_str = path.to_str().context("not UTF-8")?;
        let mut hub = herald().start(&["--unix-socket", path_str]).await?;
        let status = hub.terminate(Duration::from_secs(15)).await?;
        ensure!(
            status.success(),
            "round {round}: SIGTERM right after `listening on` ended the hub with {status} \
             (not a graceful shutdown); stderr:\n{}",
            hub.stderr()
        );
        ensure!(
            std::fs::symlink_metadata(&path).is_err(),
            "round {round}: {} is still there after SIGTERM",
            path.display()
        );
    }
    Ok(())
}
