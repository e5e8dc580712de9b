//! The dialects of the replaced systems (H13) against the real binary, with
//! raw WebSocket and HTTP clients speaking each seed's own messages: one
//! module per system. (The seeds' own client code runs against the binary
//! in `tests/compat/`, through Node, Chromium and Python.)

mod aiecs;
mod cmbagent;
mod crewai;
mod statemachine;

use anyhow::{Context, Result, ensure};
use herald_tests::{Hub, WsClient};
use serde_json::Value;

/// Connects to a dialect's `path` without expecting Herald's `welcome`.
async fn dial(hub: &Hub, path: &str) -> Result<WsClient> {
    WsClient::connect_raw(&hub.ws_url(path)).await
}

/// The next frame whose `field` is `value` (others skipped).
async fn next_with(client: &mut WsClient, field: &str, value: &str) -> Result<Value> {
    client
        .recv_until(|f| f.get(field).and_then(Value::as_str) == Some(value))
        .await
        .with_context(|| format!("waiting for a frame with {field} = {value:?}"))
}

/// A float field, which must be there.
fn float(frame: &Value, field: &str) -> Result<f64> {
    frame
        .get(field)
        .and_then(Value::as_f64)
        .with_context(|| format!("no number {field} in {frame}"))
}

/// Seconds since the epoch, as the seeds' clocks read.
fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// A timestamp in seconds that is now, give or take a minute.
fn is_now_in_seconds(frame: &Value, field: &str) -> Result<()> {
    let seconds = float(frame, field)?;
    ensure!(
        (seconds - now_seconds()).abs() < 60.0,
        "{field} is not now in seconds: {frame}"
    );
    Ok(())
}

/// Every dialect's sockets, as its clients open them.
const SOCKETS: [&str; 4] = [
    "/compat/aiecs",
    "/compat/crewai/api/v1/websocket/ws/global",
    "/compat/statemachine/ws/events",
    "/compat/cmbagent/ws/r1",
];

#[tokio::test]
async fn every_dialect_refuses_a_missing_token_and_a_foreign_origin_before_the_upgrade()
-> Result<()> {
    use crate::security::{SECRET, expect_refused, fresh, hs256, with_token};
    let hub = crate::herald()
        .start(&[
            "--jwt-secret",
            SECRET,
            "--allowed-origins",
            "https://app.example",
        ])
        .await?;
    let token = hs256(&fresh("u1", &["*"]))?;
    for path in SOCKETS {
        expect_refused(&hub.ws_url(path), &[], 401, "unauthorized").await?;
        let with = hub.ws_url(&with_token(path, &token));
        expect_refused(
            &with,
            &[("Origin", "https://evil.example")],
            403,
            "forbidden",
        )
        .await?;
        let mut admitted = WsClient::connect_raw(&with).await?;
        admitted.keep_pings = true;
        let first = admitted.recv_frame().await?;
        ensure!(!first.is_null(), "{path}: nothing after the upgrade");
    }
    Ok(())
}

/// A dialect socket for one topic (a run, the machines, a CrewAI
/// execution or crew) opens only for a token that may follow it: another
/// is refused at the upgrade, 403 `forbidden`, as a missing token is 401,
/// rather than given a socket that shows nothing. The AIECS socket follows
/// its user's own topic, which every token allows, and CrewAI's
/// `/ws/global` gets broadcasts live whatever the token, as `/ws/global`
/// does.
#[tokio::test]
async fn a_socket_for_one_topic_refuses_a_token_that_may_not_follow_it_before_the_upgrade()
-> Result<()> {
    use crate::security::{SECRET, expect_refused, fresh, hs256, with_token};
    let hub = crate::herald().start(&["--jwt-secret", SECRET]).await?;
    let elsewhere = hs256(&fresh("u1", &["run:other"]))?;
    let opens = |path: &str, token: &str| {
        let url = hub.ws_url(&with_token(path, token));
        async move {
            let mut client = WsClient::connect_raw(&url).await?;
            client.keep_pings = true;
            let first = client.recv_frame().await?;
            ensure!(!first.is_null(), "{url}: nothing after the upgrade");
            anyhow::Ok(())
        }
    };
    for (path, topic) in [
        ("/compat/cmbagent/ws/r1", "run:r1"),
        ("/compat/statemachine/ws/events", "machine:*"),
        (
            "/compat/crewai/api/v1/websocket/ws/executions/e1",
            "execution:e1",
        ),
        ("/compat/crewai/api/v1/websocket/ws/crews/c1", "crew:c1"),
    ] {
        let url = hub.ws_url(&with_token(path, &elsewhere));
        expect_refused(&url, &[], 403, "forbidden").await?;
        opens(path, &hs256(&fresh("u1", &[topic]))?).await?;
    }
    opens("/compat/aiecs", &elsewhere).await?;
    opens("/compat/crewai/api/v1/websocket/ws/global", &elsewhere).await?;
    Ok(())
}

#[tokio::test]
async fn every_dialect_is_held_to_the_client_rate_limit() -> Result<()> {
    let hub = crate::herald().start(&["--client-rate-limit", "1"]).await?;
    for path in SOCKETS {
        let mut client = dial(&hub, path).await?;
        client.keep_pings = true;
        for _ in 0..10 {
            client
                .send_text(r#"{"action":"ping","type":"ping"}"#)
                .await?;
        }
        // Each dialect says it its own way; all say `rate_limited`.
        client
            .recv_until(|f| f.to_string().contains("rate_limited"))
            .await
            .with_context(|| format!("{path} was not rate limited"))?;
    }
    Ok(())
}
