//! Starting and stopping real `herald serve` processes, and waiting on a
//! subscriber's items.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use futures::StreamExt;
use herald_client::{Subscriber, SubscriberItem};
use herald_protocol::frame::Subscribed;
use herald_tests::Herald;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long any single awaited step may take.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `future` for at most [`STEP`], panicking with `what` after that.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// The `herald` binary under test: `HERALD_BIN`, else the one Cargo built
/// for this test target.
pub fn herald_bin() -> &'static Path {
    static HERALD: LazyLock<Herald> =
        LazyLock::new(|| Herald::under_test(env!("CARGO_BIN_EXE_herald")));
    HERALD.path()
}

/// A `herald` command with the test's conventions (logs off unless
/// `HERALD_TEST_LOG` is set, so a failing test can show them).
pub fn herald() -> Command {
    let mut command = Command::new(herald_bin());
    command
        .env_remove("HERALD_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("HERALD_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .kill_on_drop(true);
    command
}

/// One running `herald serve`; killed when dropped.
#[derive(Debug)]
pub struct Hub {
    child: Child,
    /// Kept open so the hub never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Hub {
    /// `herald serve --bind 127.0.0.1:0 ARGS`.
    pub async fn start(args: &[&str]) -> Hub {
        Hub::start_on("127.0.0.1:0", args).await
    }

    /// `herald serve --bind BIND ARGS`; waits for `listening on http://…`.
    pub async fn start_on(bind: &str, args: &[&str]) -> Hub {
        let mut command = herald();
        command
            .args(["serve", "--bind", bind, "--heartbeat-interval", "1s"])
            .args(args)
            .stderr(if std::env::var_os("HERALD_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().expect("spawning herald serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        bounded(
            "herald serve printing its listening line",
            stdout.read_line(&mut line),
        )
        .await
        .expect("reading herald's stdout");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from herald serve: {line:?}"))
            .to_owned();
        let addr = url.trim_start_matches("http://").to_owned();
        Hub {
            child,
            _stdout: stdout,
            addr,
            url,
        }
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    /// Kills the hub with SIGKILL (no goodbye to anyone) and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM (the hub starts draining) without waiting.
    pub fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Stops the hub with SIGTERM (graceful shutdown) and waits for it to exit.
    pub async fn stop(mut self) {
        self.sigterm();
        if tokio::time::timeout(STEP, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The next item of `subscriber` that `pick` maps to `Some`, skipping the rest.
pub async fn next_matching<T>(
    subscriber: &mut Subscriber,
    what: &str,
    mut pick: impl FnMut(SubscriberItem) -> Option<T>,
) -> T {
    bounded(what, async {
        while let Some(item) = subscriber.next().await {
            if let Some(value) = pick(item) {
                return value;
            }
        }
        panic!("the subscriber ended while waiting for {what}");
    })
    .await
}

/// Waits for the hub's `subscribed` (a `connect` returns at `welcome`,
/// before the subscription is confirmed: an event published before this is
/// not the subscriber's).
pub async fn subscribed(subscriber: &mut Subscriber) -> Subscribed {
    next_matching(subscriber, "subscribed", |item| match item {
        SubscriberItem::Subscribed(subscribed) => Some(subscribed),
        _ => None,
    })
    .await
}

/// A TCP relay to the hub that can drop everything the client writes (a
/// link that died without either end noticing: writes still succeed), cut
/// its connections and turn new ones away.
pub struct Relay {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: watch::Sender<RelayState>,
    _accept: JoinSet<()>,
}

#[derive(Debug, Clone, Copy, Default)]
struct RelayState {
    dropping: bool,
    /// New connections are closed at once.
    refusing: bool,
    /// Bytes from clients that were dropped.
    dropped: usize,
    cuts: u32,
}

impl Relay {
    pub async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, _) = watch::channel(RelayState::default());
        let upstream = upstream.to_owned();
        let shared = state.clone();
        let mut accept = JoinSet::new();
        accept.spawn(async move {
            // Dropped with the accept loop: every relaying task stops too.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if shared.borrow().refusing {
                    continue;
                }
                let (state, upstream) = (shared.clone(), upstream.clone());
                connections.spawn(async move {
                    let Ok(hub) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_hub, mut to_hub) = hub.into_split();
                    let cuts = state.borrow().cuts;
                    let up = async {
                        let mut buffer = vec![0; 16 * 1024];
                        loop {
                            let n = from_client.read(&mut buffer).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if state.borrow().dropping {
                                state.send_modify(|s| s.dropped += n);
                            } else {
                                to_hub.write_all(&buffer[..n]).await?;
                            }
                        }
                    };
                    let mut cut = state.subscribe();
                    tokio::select! {
                        _ = up => {}
                        _ = tokio::io::copy(&mut from_hub, &mut to_client) => {}
                        _ = cut.wait_for(|s| s.cuts != cuts) => {}
                    }
                });
            }
        });
        Relay {
            url: format!("http://127.0.0.1:{port}"),
            state,
            _accept: accept,
        }
    }

    /// From now on, what clients write on open connections is dropped.
    pub fn drop_client_bytes(&self) {
        self.state.send_modify(|s| s.dropping = true);
    }

    /// Waits until some client bytes were dropped.
    pub async fn dropped_some(&self) {
        let mut state = self.state.subscribe();
        bounded(
            "the relay dropping a frame",
            state.wait_for(|s| s.dropped > 0),
        )
        .await
        .unwrap();
    }

    /// Closes every open connection; new ones are relayed faithfully.
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.dropping = false;
            s.cuts += 1;
        });
    }

    /// Closes every open connection and turns new ones away until
    /// [`Relay::reopen`].
    pub fn close(&self) {
        self.state.send_modify(|s| {
            s.refusing = true;
            s.cuts += 1;
        });
    }

    /// Relays new connections again.
    pub fn reopen(&self) {
        self.state.send_modify(|s| s.refusing = false);
    }
}
