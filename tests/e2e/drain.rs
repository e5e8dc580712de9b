//! Deploys without reconnect storms: on SIGTERM readiness fails first, new
//! connections are refused, every connection is told `system.shutdown` with
//! its own `retry_after_ms`, and the closes are spread over `--drain-window`;
//! and the Kubernetes-style health endpoints.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use herald_tests::{Hub, Redis, WsClient, eventually, frame_type, is_event_on};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{herald, str_field};

/// What one client saw of the drain: its notice's hint, and when (since the
/// SIGTERM) and how it was closed.
#[derive(Debug)]
struct Seen {
    retry_after_ms: u64,
    closed_after: Duration,
    code: u16,
}

/// Reads until the `system.shutdown` notice, then until the close.
async fn watch(mut client: WsClient, signalled: Instant) -> Result<Seen> {
    client.timeout = Duration::from_secs(10);
    let notice = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(is_event_on(&notice, "global"), "{notice}");
    ensure!(
        str_field(&notice, "event_type") == "system.shutdown",
        "{notice}"
    );
    let retry_after_ms = notice["data"]["retry_after_ms"]
        .as_u64()
        .with_context(|| format!("no retry_after_ms in {notice}"))?;
    let (code, _) = client.expect_close().await?;
    Ok(Seen {
        retry_after_ms,
        closed_after: signalled.elapsed(),
        code,
    })
}

/// The status and `Retry-After` of a WebSocket upgrade request.
async fn upgrade_status(hub: &Hub) -> Result<(u16, Option<String>)> {
    let response = reqwest::Client::new()
        .get(format!("{}/ws", hub.http_url()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((response.status().as_u16(), retry_after))
}

#[tokio::test]
async fn sigterm_fails_readiness_first_then_spreads_closes_over_the_drain_window() -> Result<()> {
    const CLIENTS: usize = 24;
    const WINDOW: Duration = Duration::from_secs(2);
    let mut hub = herald().start(&["--drain-window", "2s"]).await?;
    let http = hub.http();
    ensure!(http.get("/health/ready").await?.status == 200);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = hub.ws("/ws").await?;
        client.barrier().await?;
        clients.push(client);
    }
    // One more client, read here: its notice says the drain has begun.
    let mut first = hub.ws("/ws").await?;
    first.barrier().await?;
    let signalled = Instant::now();
    hub.sigterm().await?;
    let mut watchers = JoinSet::new();
    for client in clients {
        watchers.spawn(watch(client, signalled));
    }
    let notice = first.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(str_field(&notice, "event_type") == "system.shutdown");
    // Readiness failed before any notice was queued, so before any close.
    let ready = http.get("/health/ready").await?;
    ensure!(
        ready.status == 503 && str_field(&ready.body, "status") == "shutting_down",
        "{} {}",
        ready.status,
        ready.text
    );
    ensure!(http.get("/health").await?.status == 503);
    let status = http.get("/api/v1/status").await?;
    ensure!(status.body["running"] == false, "{}", status.text);
    // The replaced systems' own health and status URLs say so too: a load
    // balancer that polls them stops sending connections the hub refuses.
    let crewai = http.get("/compat/crewai/api/v1/websocket/health").await?;
    ensure!(crewai.status == 503, "{} {}", crewai.status, crewai.text);
    let aiecs = http.get("/compat/aiecs/status").await?;
    ensure!(aiecs.body["running"] == false, "{}", aiecs.text);
    // Stored once in `global`'s history, without anyone's retry hint.
    let history = http.get("/api/v1/topics/global/events?since=0").await?;
    let stored = history.body["events"]
        .as_array()
        .and_then(|events| events.last())
        .with_context(|| format!("nothing in global's history: {}", history.text))?;
    ensure!(
        stored["seq"] == notice["seq"] && stored["id"] == notice["id"],
        "{stored} vs {notice}"
    );
    ensure!(stored["data"].get("retry_after_ms").is_none(), "{stored}");
    ensure!(http.get("/health/live").await?.status == 200);
    let (status, retry_after) = upgrade_status(&hub).await?;
    ensure!(
        status == 503,
        "a new WebSocket during the drain got {status}"
    );
    ensure!(retry_after.is_some(), "503 without Retry-After");

    let mut seen = Vec::new();
    while let Some(joined) = watchers.join_next().await {
        seen.push(joined??);
    }
    ensure!(seen.iter().all(|s| s.code == 1001), "{seen:?}");
    ensure!(
        seen.iter().all(|s| s.retry_after_ms <= 2000),
        "hints beyond the window: {seen:?}"
    );
    let hints: HashSet<u64> = seen.iter().map(|s| s.retry_after_ms).collect();
    ensure!(hints.len() > 1, "every client got the same hint: {seen:?}");
    let first_close = seen
        .iter()
        .map(|s| s.closed_after)
        .min()
        .unwrap_or_default();
    let last_close = seen
        .iter()
        .map(|s| s.closed_after)
        .max()
        .unwrap_or_default();
    // 24 uniform closes over 2 s: all within 0.8 s of each other would be
    // a one-in-a-hundred-million draw; all at once is what a drain avoids.
    ensure!(
        last_close - first_close >= Duration::from_millis(800),
        "closes spread over only {:?}: {seen:?}",
        last_close - first_close
    );
    ensure!(
        last_close <= WINDOW + Duration::from_secs(1),
        "the last close came {last_close:?} after SIGTERM"
    );
    let status = hub.wait_exit(Duration::from_secs(10)).await?;
    ensure!(status.success(), "exit {status}; stderr:\n{}", hub.stderr());
    Ok(())
}

/// When (since `signalled`) and with which code `client` is closed,
/// whatever it reads before.
async fn closed(mut client: WsClient, signalled: Instant) -> Result<(Duration, u16)> {
    client.timeout = Duration::from_secs(15);
    let (code, _) = client.expect_close().await?;
    Ok((signalled.elapsed(), code))
}

#[tokio::test]
async fn closes_stay_spread_over_the_window_when_the_store_cannot_take_the_notice() -> Result<()> {
    const CLIENTS: usize = 16;
    let redis = Redis::start().await?;
    let store = redis.store_arg();
    let mut hub = herald()
        .start(&["--store", &store, "--drain-window", "2s"])
        .await?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = hub.ws("/ws").await?;
        client.barrier().await?;
        clients.push(client);
    }
    // Its connections open and unanswered: storing the notice times out.
    redis.pause(true).await?;
    let signalled = Instant::now();
    hub.sigterm().await?;
    let mut watchers = JoinSet::new();
    for client in clients {
        watchers.spawn(closed(client, signalled));
    }
    let mut seen = Vec::new();
    while let Some(joined) = watchers.join_next().await {
        seen.push(joined??);
    }
    redis.pause(false).await?;
    ensure!(seen.iter().all(|(_, code)| *code == 1001), "{seen:?}");
    let first = seen.iter().map(|(at, _)| *at).min().unwrap_or_default();
    let last = seen.iter().map(|(at, _)| *at).max().unwrap_or_default();
    // 16 uniform closes over 2 s all within 0.8 s of each other: about one
    // draw in ten thousand.
    ensure!(
        last - first >= Duration::from_millis(800),
        "closes spread over only {:?}: {seen:?}",
        last - first
    );
    let status = hub.wait_exit(Duration::from_secs(10)).await?;
    ensure!(status.success(), "exit {status}; stderr:\n{}", hub.stderr());
    Ok(())
}

#[tokio::test]
async fn a_long_poll_on_a_pending_approval_is_told_to_ask_again_when_the_hub_drains() -> Result<()>
{
    let mut hub = herald()
        .start(&["--drain-window", "2s", "--shutdown-grace", "30s"])
        .await?;
    let mut client = hub.ws("/ws").await?;
    client.barrier().await?;
    let http = hub.http();
    let asked = http
        .post(
            "/api/v1/approvals",
            &json!({
                "user_id": "u1", "task_id": "t1", "step": 1, "timeout_ms": 60_000,
                "step_result": {"step": "train", "message": "retry?", "status": "failed"}
            }),
        )
        .await?
        .ok()?;
    let id = str_field(&asked.body, "callback_id").to_owned();
    // Whether it was waiting already or comes in during the drain.
    let path = format!("/api/v1/approvals/{id}?wait_ms=20000");
    let (reply, signalled) = tokio::join!(http.get(&path), hub.sigterm());
    signalled?;
    let reply = reply?;
    ensure!(
        reply.status == 503 && reply.retry_after.is_some(),
        "{} {:?} {}",
        reply.status,
        reply.retry_after,
        reply.text
    );
    let status = hub.wait_exit(Duration::from_secs(10)).await?;
    ensure!(status.success(), "exit {status}; stderr:\n{}", hub.stderr());
    Ok(())
}

#[tokio::test]
async fn a_hub_without_connections_exits_at_once_on_sigterm() -> Result<()> {
    let mut hub = herald().start(&["--drain-window", "30s"]).await?;
    let started = Instant::now();
    let status = hub.terminate(Duration::from_secs(10)).await?;
    ensure!(status.success(), "exit {status}; stderr:\n{}", hub.stderr());
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} with nothing to drain",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_second_signal_during_the_drain_stops_the_hub_at_once() -> Result<()> {
    let mut hub = herald().start(&["--drain-window", "30s"]).await?;
    // A connection keeps the drain going for up to its window.
    let _client = hub.ws("/ws").await?;
    hub.sigterm().await?;
    eventually(Duration::from_secs(5), "the drain begins", || async {
        Ok((hub.http().get("/health/ready").await?.status == 503).then_some(()))
    })
    .await?;
    let second = Instant::now();
    hub.signal("INT").await?;
    let status = hub.wait_exit(Duration::from_secs(5)).await?;
    ensure!(!status.success(), "exit {status} after a cut-short drain");
    ensure!(
        second.elapsed() < Duration::from_secs(3),
        "took {:?} after the second signal",
        second.elapsed()
    );
    ensure!(hub.stderr().contains("second signal"), "{}", hub.stderr());
    Ok(())
}

#[tokio::test]
async fn health_live_and_ready_answer_200_while_serving() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let live = http.get("/health/live").await?;
    ensure!(
        live.status == 200 && str_field(&live.body, "status") == "alive",
        "{}",
        live.text
    );
    let ready = http.get("/health/ready").await?;
    ensure!(
        ready.status == 200 && str_field(&ready.body, "status") == "ready",
        "{}",
        ready.text
    );
    let health = http.get("/health").await?;
    ensure!(
        health.status == 200 && str_field(&health.body, "status") == "healthy",
        "{}",
        health.text
    );
    ensure!(
        health
            .body
            .get("active_connections")
            .is_some_and(Value::is_u64)
    );
    Ok(())
}
