//! Heartbeats: the hub's app-level `ping` frames and the heartbeat timeout.

use std::time::Duration;

use anyhow::{Result, ensure};
use herald_tests::{Hub, eventually, frame_type, raw_ws_upgrade};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, timeout};

use serde_json::json;

use crate::http_api::active_connections;
use crate::{event, herald};

/// A hub that pings every 100 ms and drops a peer silent for 500 ms.
async fn strict_heartbeat() -> Result<Hub> {
    herald()
        .start(&[
            "--heartbeat-interval",
            "100ms",
            "--heartbeat-timeout",
            "500ms",
        ])
        .await
}

#[tokio::test]
async fn hub_sends_app_level_pings_at_the_heartbeat_interval() -> Result<()> {
    let hub = herald()
        .start(&["--heartbeat-interval", "200ms", "--heartbeat-timeout", "5s"])
        .await?;
    let mut client = hub.ws("/ws").await?;
    client.keep_pings = true;
    client.timeout = Duration::from_secs(2);
    let start = Instant::now();
    for _ in 0..4 {
        let ping = client.recv_until(|f| frame_type(f) == "ping").await?;
        client
            .send_json(&serde_json::json!({"action": "pong"}))
            .await?;
        let _ = ping;
    }
    let elapsed = start.elapsed();
    // Four pings at 200 ms take about 800 ms; allow generous slack both ways.
    ensure!(
        elapsed >= Duration::from_millis(450),
        "pings came too fast: 4 in {elapsed:?}"
    );
    ensure!(
        elapsed <= Duration::from_secs(4),
        "pings came too slowly: 4 in {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn client_that_answers_heartbeats_stays_connected_past_the_timeout() -> Result<()> {
    let hub = herald()
        .start(&[
            "--heartbeat-interval",
            "100ms",
            "--heartbeat-timeout",
            "400ms",
        ])
        .await?;
    let mut client = hub.ws("/ws").await?;
    // recv_frame answers app pings with pong (and tungstenite answers protocol
    // pings) while reading; the barrier proves the connection is alive.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        client.barrier().await?;
        let _ = timeout(Duration::from_millis(100), client.recv_frame()).await;
    }
    client.barrier().await?;
    Ok(())
}

#[tokio::test]
async fn client_that_never_reads_is_dropped_after_the_heartbeat_timeout() -> Result<()> {
    let hub = strict_heartbeat().await?;
    let client = hub.ws("/ws").await?;
    ensure!(
        active_connections(&hub).await? == 1,
        "the connection is not counted"
    );
    // The client never reads again, so it answers nothing.
    eventually(
        Duration::from_secs(5),
        "the silent client is dropped",
        || async { Ok((active_connections(&hub).await? == 0).then_some(())) },
    )
    .await?;
    drop(client);
    Ok(())
}

#[tokio::test]
async fn raw_tcp_client_that_never_answers_pings_is_closed_after_the_timeout() -> Result<()> {
    let hub = strict_heartbeat().await?;
    let mut stream = raw_ws_upgrade(hub.addr(), "/ws").await?;
    // Read (and ignore) whatever the hub sends, answering nothing, until the
    // hub closes the TCP connection.
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let ended = timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    ensure!(ended.is_ok(), "the hub kept a silent client for over 5 s");
    ensure!(
        start.elapsed() >= Duration::from_millis(300),
        "closed before the heartbeat timeout could have passed: {:?}",
        start.elapsed()
    );
    Ok(())
}

/// A subscriber that stops reading while events keep coming fills its TCP
/// window, and the hub's write to it waits: that write gets the heartbeat
/// timeout, then the connection goes (the heartbeat check cannot run while
/// the write waits, so this is the only thing that ends it).
#[tokio::test]
async fn subscriber_whose_socket_fills_is_dropped_after_the_heartbeat_timeout() -> Result<()> {
    let hub = strict_heartbeat().await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:full"]).await?;
    // 400 events of 32 KiB: far more than the socket buffers of both ends
    // hold, far fewer frames than the hub's queue (1024), so nothing is shed
    // and the connection is not closed for falling behind.
    let blob = "f".repeat(32 * 1024);
    let http = hub.http();
    for i in 0..400 {
        let body = event(
            "execution:full",
            "execution.progress",
            json!({"i": i, "blob": blob}),
        );
        http.publish(&body).await?;
    }
    eventually(
        Duration::from_secs(10),
        "the subscriber whose write stalled is dropped",
        || async { Ok((active_connections(&hub).await? == 0).then_some(())) },
    )
    .await?;
    drop(client);
    Ok(())
}
