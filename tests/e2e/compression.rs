//! `permessage-deflate` (`--compression`): negotiated only when on, large
//! frames sent compressed (once per event, the same bytes for everyone),
//! client frames inflated, and a deflate bomb closed with 1009 without the
//! hub ever holding more than the frame limit.

use anyhow::{Context, Result, bail, ensure};
use herald_tests::deflate_client::{DeflateClient, Received};
use herald_tests::{Hub, frame_type, metric};
use serde_json::{Value, json};

use crate::herald;

/// An LLM-output style event: a long stream of prose in `data.text`.
fn llm_event(topic: &str) -> Value {
    let words = [
        "the",
        "model",
        "considers",
        "request",
        "retry",
        "training",
        "with",
        "a",
        "smaller",
        "batch",
        "because",
        "GPU",
        "memory",
        "ran",
        "out",
        "at",
        "24",
        "GiB;",
        "step",
        "3",
        "loss",
        "improves",
        "after",
        "epoch",
        "tool",
        "call",
        "returned",
        "result",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut text = String::new();
    while text.len() < 8000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(words[(state % words.len() as u64) as usize]);
        text.push(' ');
    }
    json!({"topic": topic, "event_type": "agent.message", "data": {"role": "assistant", "text": text}})
}

/// The peak resident set of a process, in KiB (`VmHWM`).
fn peak_rss_kib(hub: &Hub) -> Result<u64> {
    let pid = hub.pid().context("herald has exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

#[tokio::test]
async fn compression_is_negotiated_only_when_turned_on() -> Result<()> {
    let plain = herald().start(&[]).await?;
    let offered = DeflateClient::connect(plain.addr(), "/ws").await?;
    ensure!(
        offered.extensions.is_none(),
        "negotiated while off: {:?}",
        offered.extensions
    );
    let compressing = herald().start(&["--compression"]).await?;
    let agreed = DeflateClient::connect(compressing.addr(), "/ws").await?;
    let extensions = agreed.extensions.unwrap_or_default();
    ensure!(
        extensions.starts_with("permessage-deflate")
            && extensions.contains("server_no_context_takeover")
            && extensions.contains("client_no_context_takeover"),
        "{extensions}"
    );
    // A client that does not offer it gets plain frames from the same hub.
    let mut client = compressing.ws("/ws?topics=run:plain").await?;
    client.expect_subscribed(&["run:plain"]).await?;
    compressing.http().publish(&llm_event("run:plain")).await?;
    let event = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(
        event["data"]["text"]
            .as_str()
            .is_some_and(|t| t.len() > 7000)
    );
    Ok(())
}

#[tokio::test]
async fn large_events_arrive_compressed_and_inflate_to_exactly_what_a_plain_client_gets()
-> Result<()> {
    let hub = herald().start(&["--compression"]).await?;
    let mut compressed = DeflateClient::connect(hub.addr(), "/ws").await?;
    let welcome = compressed.recv().await?;
    ensure!(
        matches!(
            &welcome,
            Received::Text {
                compressed: false,
                ..
            }
        ),
        "{welcome:?}"
    );
    // The subscribe goes compressed too: the hub inflates it.
    let subscribe = json!({"action": "subscribe", "id": 1, "topics": ["run:llm"]}).to_string();
    compressed.send_compressed(&subscribe).await?;
    compressed
        .recv_text_until(|t| t.contains("\"subscribed\""))
        .await?;
    let mut plain = hub.ws("/ws?topics=run:llm").await?;
    plain.expect_subscribed(&["run:llm"]).await?;

    hub.http().publish(&llm_event("run:llm")).await?;
    let small = json!({"topic": "run:llm", "event_type": "step.started", "data": {"step": 1}});
    hub.http().publish(&small).await?;

    let Received::Text {
        text,
        compressed: was_compressed,
        wire,
    } = compressed
        .recv_text_until(|t| t.contains("agent.message"))
        .await?
    else {
        bail!("not a text frame");
    };
    let plain_event = plain.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(was_compressed, "a large event came uncompressed");
    let inflated: Value = serde_json::from_str(&text)?;
    ensure!(
        inflated == plain_event,
        "the inflated frame differs from the plain one"
    );
    ensure!(
        wire * 2 < text.len(),
        "{wire} bytes on the wire for {} of text",
        text.len()
    );
    let Received::Text {
        compressed: small_compressed,
        ..
    } = compressed
        .recv_text_until(|t| t.contains("step.started"))
        .await?
    else {
        bail!("not a text frame");
    };
    ensure!(!small_compressed, "a small frame was compressed");
    let metrics = hub.http().get("/metrics").await?.text;
    let deflated = metric(&metrics, "herald_bytes_deflated_total").unwrap_or_default();
    ensure!(
        deflated > 0.0 && deflated < 4000.0,
        "herald_bytes_deflated_total {deflated}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deflate_bomb_is_closed_with_1009_and_the_hub_never_holds_it_inflated() -> Result<()> {
    let hub = herald()
        .start(&["--compression", "--max-frame-size", "64KiB"])
        .await?;
    let mut victim = hub.ws("/ws?topics=run:v").await?;
    victim.expect_subscribed(&["run:v"]).await?;
    let mut attacker = DeflateClient::connect(hub.addr(), "/ws").await?;
    attacker.recv().await?; // welcome
    // 64 MiB of spaces compress to about 64 KiB: under the frame limit on
    // the wire, a thousand times over it inflated.
    let bomb_text = " ".repeat(64 << 20);
    let bomb =
        herald_tests::deflate_client::deflate(bomb_text.as_bytes(), flate2::Compression::best());
    drop(bomb_text);
    ensure!(bomb.len() < 64 * 1024, "the bomb is {} bytes", bomb.len());
    let before = peak_rss_kib(&hub)?;
    attacker.send_frame(&bomb, true).await?;
    let closed = loop {
        match attacker.recv().await? {
            Received::Close(code) => break code,
            Received::Text { .. } => {}
        }
    };
    ensure!(closed == 1009, "closed with {closed}");
    let grown = peak_rss_kib(&hub)?.saturating_sub(before);
    ensure!(
        grown < 16 * 1024,
        "the hub's peak memory grew by {grown} KiB"
    );
    // Everyone else is served as before.
    hub.http()
        .publish(&json!({"topic": "run:v", "event_type": "step.started"}))
        .await?;
    victim.recv_until(|f| frame_type(f) == "event").await?;
    Ok(())
}
