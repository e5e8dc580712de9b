//! The durable store: `--store sqlite:PATH` across `kill -9`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use herald_tests::{Hub, frame_type, seq_of};
use serde_json::json;

use crate::snapshot::by_key;
use crate::{event, herald};

const N: u64 = 20;

/// Starts a hub on a fresh database, publishes `N` acknowledged events (keyed
/// `k0`..`k4`) on `topic`, kills it with SIGKILL and starts it again on the
/// same file. Returns the new hub, the directory guard and the old epoch.
async fn publish_then_crash(topic: &str) -> Result<(Hub, tempfile::TempDir, serde_json::Value)> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    let mut hub = herald().start(&["--store", &store]).await?;
    let http = hub.http();
    for i in 0..N {
        let mut body = event(topic, "state.changed", json!({"i": i}));
        body["key"] = json!(format!("k{}", i % 5));
        let receipt = http.publish(&body).await?;
        ensure!(receipt["seq"] == json!(i + 1), "{receipt}");
    }
    let epoch = http
        .get(&format!("/api/v1/topics/{topic}/events?since={N}"))
        .await?
        .body["epoch"]
        .clone();
    hub.kill9().await?;
    let hub = herald().start(&["--store", &store]).await?;
    Ok((hub, dir, epoch))
}

#[tokio::test]
async fn sqlite_history_keeps_every_acknowledged_event_across_kill_9() -> Result<()> {
    let (hub, _dir, _) = publish_then_crash("execution:durable").await?;
    let reply = hub
        .http()
        .get("/api/v1/topics/execution:durable/events?since=0")
        .await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    let events = reply.body["events"]
        .as_array()
        .context("events is not a list")?;
    let seqs: Vec<u64> = events.iter().filter_map(seq_of).collect();
    ensure!(seqs == (1..=N).collect::<Vec<_>>(), "{}", reply.text);
    ensure!(events[0]["data"] == json!({"i": 0}), "{}", reply.text);
    Ok(())
}

#[tokio::test]
async fn sqlite_next_publish_after_restart_continues_the_seq() -> Result<()> {
    let (hub, _dir, _) = publish_then_crash("execution:continue").await?;
    let seq = hub
        .http()
        .publish_simple("execution:continue", "state.changed", json!({}))
        .await?;
    ensure!(
        seq == N + 1,
        "next seq after restart is {seq}, expected {}",
        N + 1
    );
    Ok(())
}

#[tokio::test]
async fn sqlite_snapshot_survives_kill_9() -> Result<()> {
    let (hub, _dir, _) = publish_then_crash("crew:durable").await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["crew:durable"], "snapshot": true}))
        .await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(snapshot["seq"] == json!(N), "{snapshot}");
    let view = by_key(&snapshot)?;
    // Keys k0..k4 were last written by events 16..20 (i = 15..19).
    for k in 0..5u64 {
        let (seq, data) = view
            .get(&format!("k{k}"))
            .with_context(|| format!("k{k} missing: {snapshot}"))?;
        ensure!(
            *seq == 16 + k && *data == json!({"i": 15 + k}),
            "{snapshot}"
        );
    }
    ensure!(view.len() == 5, "{snapshot}");
    Ok(())
}

#[tokio::test]
async fn sqlite_keeps_the_epoch_so_since_resumes_without_a_gap() -> Result<()> {
    let (hub, _dir, epoch) = publish_then_crash("execution:epoch").await?;
    ensure!(epoch.is_string(), "no epoch before the crash: {epoch}");
    let mut client = hub.ws("/ws").await?;
    let since = json!({"execution:epoch": {"seq": N - 2, "epoch": epoch}});
    client
        .send_json(&json!({"action": "subscribe", "topics": ["execution:epoch"], "since": since}))
        .await?;
    let (done, before) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    ensure!(!before.iter().any(|f| frame_type(f) == "gap"), "{before:?}");
    let seqs: Vec<u64> = before
        .iter()
        .filter(|f| frame_type(f) == "event")
        .filter_map(seq_of)
        .collect();
    ensure!(seqs == [N - 1, N], "{before:?}");
    ensure!(done["to_seq"] == json!(N), "{done}");
    Ok(())
}

/// Subscribes to `topic` resuming from `since`, and returns its
/// `subscribed` frame and the frames up to `replay_complete`.
async fn resume(
    hub: &Hub,
    topic: &str,
    since: serde_json::Value,
) -> Result<(serde_json::Value, Vec<serde_json::Value>)> {
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": [topic], "since": {topic: since}}))
        .await?;
    let subscribed = client.recv_until(|f| frame_type(f) == "subscribed").await?;
    let (done, mut replayed) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    replayed.push(done);
    Ok((subscribed, replayed))
}

#[tokio::test]
async fn sqlite_keeps_the_epoch_a_subscriber_was_given_before_any_event_across_kill_9() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    let mut hub = herald().start(&["--store", &store]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["run:quiet"]}))
        .await?;
    let given = client.recv_until(|f| frame_type(f) == "subscribed").await?;
    ensure!(
        given["epoch"].is_string() && given["seq"] == json!(0),
        "{given}"
    );
    hub.kill9().await?;
    let hub = herald().start(&["--store", &store]).await?;
    let (subscribed, replayed) = resume(
        &hub,
        "run:quiet",
        json!({"seq": 0, "epoch": given["epoch"]}),
    )
    .await?;
    ensure!(
        subscribed["epoch"] == given["epoch"],
        "{subscribed} after {given}"
    );
    ensure!(
        !replayed.iter().any(|f| frame_type(f) == "gap"),
        "{replayed:?}"
    );
    let seq = hub
        .http()
        .publish_simple("run:quiet", "state.changed", json!({}))
        .await?;
    ensure!(seq == 1, "the first event took seq {seq}");
    Ok(())
}

#[tokio::test]
async fn sqlite_keeps_the_epoch_and_seq_of_a_topic_whose_history_aged_out_across_kill_9()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    let args = ["--store", store.as_str(), "--history-age", "1s"];
    let mut hub = herald().start(&args).await?;
    for _ in 0..3 {
        hub.http()
            .publish_simple("run:aged", "state.changed", json!({}))
            .await?;
    }
    let epoch = hub
        .http()
        .get("/api/v1/topics/run:aged/events?since=3")
        .await?
        .body["epoch"]
        .clone();
    // The history ages out, and the store prunes it after a write once its
    // prune interval (5 s) is over.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    hub.http()
        .publish_simple("run:other", "state.changed", json!({}))
        .await?;
    hub.kill9().await?;
    // The stream is still there, without its history.
    let hub = herald().start(&args).await?;
    let (subscribed, replayed) =
        resume(&hub, "run:aged", json!({"seq": 3, "epoch": epoch})).await?;
    ensure!(
        subscribed["epoch"] == epoch && subscribed["seq"] == json!(3),
        "{subscribed}"
    );
    ensure!(
        !replayed.iter().any(|f| frame_type(f) == "gap"),
        "{replayed:?}"
    );
    // A subscriber that had seen less is told what aged out.
    let (_, replayed) = resume(&hub, "run:aged", json!({"seq": 1, "epoch": epoch})).await?;
    let gap = replayed
        .iter()
        .find(|f| frame_type(f) == "gap")
        .with_context(|| format!("no gap: {replayed:?}"))?;
    ensure!(
        gap["reason"] == json!("trimmed")
            && gap["from_seq"] == json!(2)
            && gap["to_seq"] == json!(3),
        "{gap}"
    );
    let seq = hub
        .http()
        .publish_simple("run:aged", "state.changed", json!({}))
        .await?;
    ensure!(seq == 4, "the next event took seq {seq}");
    Ok(())
}

#[tokio::test]
async fn bad_sqlite_path_exits_non_zero_with_a_clear_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A path under a regular file can never be created, even by root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"")?;
    let path = blocker.join("herald.db");
    let store = format!("sqlite:{}", path.display());
    let output = herald()
        .run(
            &["serve", "--bind", "127.0.0.1:0", "--store", &store],
            Duration::from_secs(20),
        )
        .await?;
    ensure!(!output.status.success(), "herald started on {store}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let names_it =
        stderr.contains(&path.display().to_string()) || stderr.to_lowercase().contains("sqlite");
    ensure!(names_it, "stderr does not say what failed:\n{stderr}");
    ensure!(
        stderr.contains("its directory must exist"),
        "stderr does not say what to check:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        !stdout.contains("listening on"),
        "claimed to listen: {stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn the_events_a_conflict_leaves_published_are_committed_before_the_409() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    let mut hub = herald().start(&["--store", &store]).await?;
    let http = hub.http();
    // Several rounds: an answer sent before the commit is a race each round
    // would have to win for this to pass.
    let mut read = Vec::new();
    for round in 0..10 {
        let topic = format!("run:conflict-{round}");
        let mut taken = event(&topic, "step.completed", json!({"n": 0}));
        taken["id"] = json!("taken");
        http.publish(&taken).await?;
        let mut batch: Vec<serde_json::Value> = (1..=N)
            .map(|i| event(&topic, "agent.message", json!({"i": i})))
            .collect();
        let mut reused = taken.clone();
        reused["data"] = json!({"n": 1});
        batch.push(reused);
        let reply = http.post("/api/v1/events", &json!(batch)).await?;
        ensure!(reply.status == 409, "{} {}", reply.status, reply.text);
        ensure!(reply.body["index"] == json!(N), "{}", reply.text);
        // Told that the events before it are published: they are, at once.
        let path = format!("/api/v1/topics/{topic}/events?since=0");
        let stored = http.get(&path).await?;
        let seqs: Vec<u64> = stored.body["events"]
            .as_array()
            .context("events is not a list")?
            .iter()
            .filter_map(seq_of)
            .collect();
        ensure!(
            seqs == (1..=N + 1).collect::<Vec<_>>(),
            "round {round}: {}",
            stored.text
        );
        read.push((path, stored.body["events"].clone()));
    }
    // And after a crash right after the answers.
    hub.kill9().await?;
    let hub = herald().start(&["--store", &store]).await?;
    for (path, events) in read {
        let after = hub.http().get(&path).await?;
        ensure!(after.body["events"] == events, "{path}: {}", after.text);
    }
    Ok(())
}
