//! `herald publish`, `herald tail` and `herald approve` against a real hub.

use herald_client::Publisher;
use herald_protocol::payload::ApprovalStatus;
use herald_protocol::{PublishReceipt, ServerMessage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::approval::new_approval;
use crate::harness::{Hub, bounded, herald};

async fn run(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut command = herald();
    command.args(args);
    if stdin.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let mut child = command.spawn().expect("spawning herald");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    bounded(&format!("herald {args:?}"), child.wait_with_output())
        .await
        .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn help_lists_the_client_commands_and_their_flags() {
    let output = run(&["--help"], None).await;
    let help = stdout(&output);
    for command in ["serve", "publish", "tail", "approve"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let publish = stdout(&run(&["publish", "--help"], None).await);
    for flag in [
        "--topic",
        "--type",
        "--priority",
        "--key",
        "--data",
        "--id",
        "--url",
    ] {
        assert!(publish.contains(flag), "{flag} missing from:\n{publish}");
    }
    let tail = stdout(&run(&["tail", "--help"], None).await);
    for flag in ["--topics", "--since", "--json", "--url"] {
        assert!(tail.contains(flag), "{flag} missing from:\n{tail}");
    }
    let approve = stdout(&run(&["approve", "--help"], None).await);
    for flag in ["--proceed", "--reject", "--feedback", "--url"] {
        assert!(approve.contains(flag), "{flag} missing from:\n{approve}");
    }
}

#[tokio::test]
async fn published_events_are_seen_by_tail_since_zero_json() {
    let hub = Hub::start(&[]).await;
    let first = run(
        &[
            "publish",
            "--topic",
            "run:cli",
            "--type",
            "step.completed",
            "--priority",
            "high",
            "--key",
            "s1",
            "--data",
            r#"{"step":1}"#,
            "--id",
            "cli-event-1",
            "--url",
            &hub.url,
        ],
        None,
    )
    .await;
    assert!(first.status.success(), "{first:?}");
    let receipt: PublishReceipt = serde_json::from_str(stdout(&first).trim()).unwrap();
    assert_eq!(
        (receipt.id.as_str(), receipt.topic.as_str(), receipt.seq),
        ("cli-event-1", "run:cli", 1)
    );

    // Data from stdin when --data is absent.
    let second = run(
        &[
            "publish",
            "--topic",
            "run:cli",
            "--type",
            "step.completed",
            "--url",
            &hub.url,
        ],
        Some(r#"{"step":2}"#),
    )
    .await;
    assert!(second.status.success(), "{second:?}");

    let mut tail = herald()
        .args([
            "tail", "--topics", "run:cli", "--since", "0", "--json", "--url", &hub.url,
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for _ in 0..2 {
        let line = bounded("a line from herald tail", lines.next_line())
            .await
            .unwrap()
            .expect("a line");
        match ServerMessage::decode(&line).unwrap() {
            Some(ServerMessage::Event(event)) => events.push(event),
            other => panic!("not an event frame: {other:?} from {line}"),
        }
    }
    assert_eq!(events[0].id.as_str(), "cli-event-1");
    assert_eq!(events[0].priority.as_str(), "high");
    assert_eq!(events[0].key.as_ref().map(|k| k.as_str()), Some("s1"));
    assert_eq!(events[0].data, serde_json::json!({"step": 1}));
    assert_eq!(
        (events[1].seq, &events[1].data),
        (2, &serde_json::json!({"step": 2}))
    );
    tail.kill().await.unwrap();

    // The readable format.
    let mut tail = herald()
        .args([
            "tail", "--topics", "run:cli", "--since", "1", "--url", &hub.url,
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = bounded("a readable line", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    assert_eq!(line, r#"run:cli #2 step.completed normal {"step":2}"#);
    tail.kill().await.unwrap();
}

#[tokio::test]
async fn approve_resolves_a_pending_approval_and_fails_on_a_decided_one() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let record = bounded(
        "create",
        publisher.create_approval(&new_approval("bob", "task-cli")),
    )
    .await
    .unwrap();
    let id = record.request.callback_id.as_str().to_owned();
    assert_eq!(record.status, ApprovalStatus::Pending);

    let output = run(
        &[
            "approve",
            &id,
            "--reject",
            "--feedback",
            "not today",
            "--url",
            &hub.url,
        ],
        None,
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let printed: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(printed["status"], "rejected");

    let decision = bounded("decision", publisher.approval(&record.request.callback_id))
        .await
        .unwrap();
    assert_eq!(decision.status, ApprovalStatus::Rejected);
    assert_eq!(decision.proceed, Some(false));
    assert_eq!(decision.feedback.as_deref(), Some("not today"));

    let again = run(&["approve", &id, "--proceed", "--url", &hub.url], None).await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("conflict"), "{stderr}");

    let neither = run(&["approve", &id, "--url", &hub.url], None).await;
    assert!(
        !neither.status.success(),
        "--proceed or --reject is required"
    );
}

/// Takes connections and never answers them.
async fn never_answer(listener: tokio::net::TcpListener) -> std::convert::Infallible {
    let mut open = Vec::new();
    loop {
        if let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    }
}

#[tokio::test]
async fn publish_gives_up_at_its_timeout_on_a_hub_that_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let args = [
        "publish",
        "--url",
        &url,
        "--topic",
        "run:r1",
        "--type",
        "step.started",
        "--data",
        "1",
        "--timeout",
        "1s",
    ];
    let output = tokio::select! {
        output = run(&args, None) => output,
        never = never_answer(listener) => match never {},
    };
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("did not answer within"), "{said}");
}

#[tokio::test]
async fn a_url_with_a_token_in_it_is_refused_without_printing_the_token() {
    for command in ["tail", "approve"] {
        let args: &[&str] = match command {
            "tail" => &["tail", "--topics", "run:r1"],
            _ => &["approve", "some-id", "--proceed"],
        };
        let url = "http://127.0.0.1:1/?token=s3cret-value";
        let output = run(&[args, &["--url", url]].concat(), None).await;
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{said}");
        assert!(said.contains("no query"), "{said}");
        assert!(
            !said.contains("s3cret"),
            "{command} printed the token: {said}"
        );
    }
}

#[tokio::test]
async fn tail_disconnected_by_an_admin_stops_and_says_why() {
    let hub = Hub::start(&[]).await;
    let mut tail = herald()
        .args(["tail", "--topics", "run:cli", "--url", &hub.url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut notes = BufReader::new(tail.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    while !said.iter().any(|line: &String| line.ends_with("connected")) {
        let line = bounded("tail's notes", notes.next_line()).await.unwrap();
        said.push(line.expect("tail ended before it connected"));
    }
    let http = reqwest::Client::new();
    let connections = format!("{}/api/v1/connections", hub.url);
    let list: serde_json::Value = http
        .get(&connections)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["connections"][0]["id"]
        .as_str()
        .expect("tail's connection");
    let deleted = http
        .delete(format!("{connections}/{id}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{deleted:?}");
    while let Some(line) = bounded("tail's notes", notes.next_line()).await.unwrap() {
        said.push(line);
    }
    let status = bounded("tail's exit", tail.wait()).await.unwrap();
    assert!(!status.success(), "{said:?}");
    assert!(
        said.iter().any(|line| line
            .ends_with("the hub closed the connection for good: 4500 (disconnected by an admin)")),
        "{said:?}"
    );
}

/// Publishes `events` events on `topic` of a hub started with `args`, then
/// runs `tail --since 999 --json` on it (a checkpoint past the end, from
/// another stream: the hub says the stream changed and replays nothing) and
/// returns its first `lines` frames, as `event SEQ` or `REASON FROM..TO`.
async fn tail_past_the_end(args: &[&str], topic: &str, events: u64, lines: usize) -> Vec<String> {
    let hub = Hub::start(args).await;
    let publisher = Publisher::builder(hub.url.clone()).build().unwrap();
    for step in 1..=events {
        publisher
            .publish(herald_client::PublishRequest::new(
                topic.parse().unwrap(),
                "step.completed".parse().unwrap(),
                serde_json::json!({ "step": step }),
            ))
            .await
            .unwrap();
    }
    let mut tail = herald()
        .args([
            "tail", "--topics", topic, "--since", "999", "--json", "--url", &hub.url,
        ])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    for _ in 0..lines {
        let line = bounded("a line from herald tail", out.next_line())
            .await
            .unwrap()
            .expect("a line");
        said.push(match ServerMessage::decode(&line).unwrap() {
            Some(ServerMessage::Event(event)) => format!("event {}", event.seq),
            Some(ServerMessage::Gap(gap)) => {
                format!("{:?} {}..{}", gap.reason, gap.from_seq, gap.to_seq)
            }
            other => panic!("not an event or gap frame: {other:?} from {line}"),
        });
    }
    tail.kill().await.unwrap();
    said
}

#[tokio::test]
async fn tail_since_past_a_topics_end_prints_the_stream_there_is_from_its_history() {
    let said = tail_past_the_end(&[], "run:cli-new", 3, 3).await;
    assert_eq!(said, ["event 1", "event 2", "event 3"]);
}

#[tokio::test]
async fn tail_tells_what_a_replaced_streams_history_no_longer_holds_as_a_trimmed_gap() {
    let said = tail_past_the_end(&["--history-size", "2"], "run:cli-trimmed", 5, 3).await;
    assert_eq!(said, ["Trimmed 1..3", "event 4", "event 5"]);
}

#[tokio::test]
async fn tail_stops_and_says_so_when_its_token_expires() {
    let secret = "a secret of thirty-two bytes or more, for tests";
    let hub = Hub::start(&["--jwt-secret", secret]).await;
    let token = crate::subscriber::token(secret, "u1", 2);
    let output = run(
        &[
            "tail", "--topics", "run:cli", "--url", &hub.url, "--token", &token,
        ],
        None,
    )
    .await;
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("the token expired (close code 4001); run again with a fresh --token"),
        "{said}"
    );
    // A token the hub refuses at the upgrade: its reason is shown.
    let output = run(
        &[
            "tail",
            "--topics",
            "run:cli",
            "--url",
            &hub.url,
            "--token",
            "not-a-token",
        ],
        None,
    )
    .await;
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("HTTP 401: unauthorized: "), "{said}");
}

#[tokio::test]
async fn serve_goes_on_when_nobody_reads_its_stdout() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut hub = herald()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut notes = BufReader::new(hub.stderr.take().unwrap()).lines();
    loop {
        let line = bounded("serve's log", notes.next_line())
            .await
            .unwrap()
            .expect("serve ended before it logged the closed stdout");
        if line.contains("could not print the listening line on stdout") {
            break;
        }
    }
    assert!(hub.try_wait().unwrap().is_none(), "serve stopped");
    let pid = hub.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = bounded("serve's exit", hub.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}
