//! A real `redis-server` for the tests of the Redis engine: started on a
//! free loopback port without persistence (`--save ''`, `--appendonly no`),
//! stopped by its PID, restarted on the same port (empty, as a restart
//! without persistence leaves it, or loading its last snapshot slowly).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// How long `redis-server` may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` process. Dropping it kills the process.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    /// Its working directory, where [`Redis::save`] writes `dump.rdb`.
    dir: tempfile::TempDir,
    /// Whether a restart comes back with the last snapshot.
    persistent: bool,
}

impl Redis {
    /// Starts `redis-server` on a free loopback port and waits for it.
    pub async fn start() -> Result<Redis> {
        Redis::start_with(false).await
    }

    /// Starts `redis-server` whose [`Redis::restart`] comes back with what
    /// the last [`Redis::save`] wrote.
    pub async fn start_persistent() -> Result<Redis> {
        Redis::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Result<Redis> {
        let mut redis = Redis {
            child: None,
            port: free_port()?,
            dir: tempfile::tempdir().context("a working directory for redis-server")?,
            persistent,
        };
        redis.launch(&[]).await?;
        Ok(redis)
    }

    /// Writes the snapshot now (`SAVE`).
    pub async fn save(&self) -> Result<()> {
        match self.command(&["SAVE"]).await? {
            redis::Value::Okay => Ok(()),
            reply => bail!("SAVE failed: {reply:?}"),
        }
    }

    /// Starts the process with `extra` arguments and waits until it
    /// answers `PING` (with `PONG`, or that it is loading its data).
    async fn launch(&mut self, extra: &[&str]) -> Result<()> {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .args(extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server is not installed: the Redis engine's tests need it \
                 (Debian/Ubuntu: apt-get install redis-server; `cargo xtask ci` installs it)"
            ),
            Err(error) => return Err(error).context("starting redis-server"),
        };
        self.child = Some(child);
        crate::eventually(START_TIMEOUT, "redis-server answers PING", || async {
            Ok(self.loading().await.ok().map(|_| ()))
        })
        .await
    }

    /// Whether it is loading its data set (it answers `PING` with a
    /// `LOADING` error until done); `Err` when it does not answer.
    pub async fn loading(&self) -> Result<bool> {
        match self.command(&["PING"]).await {
            Ok(redis::Value::SimpleString(pong)) if pong == "PONG" => Ok(false),
            Ok(other) => bail!("PING answered {other:?}"),
            Err(error) => {
                let loading = error.chain().any(|cause| {
                    cause.downcast_ref::<redis::RedisError>().is_some_and(|e| {
                        e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    })
                });
                if loading { Ok(true) } else { Err(error) }
            }
        }
    }

    /// Adds `keys` small keys of no meaning, so that loading a snapshot
    /// takes a while (see [`Redis::restart_loading_slowly`]).
    pub async fn fill(&self, keys: usize) -> Result<()> {
        let script = "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'filler:' .. i, i) end";
        self.command(&["EVAL", script, "0", &keys.to_string()])
            .await
            .map(|_| ())
    }

    /// Restarts it ([`Redis::start_persistent`]) with its last snapshot,
    /// loaded at one key a millisecond
    /// (`key-load-delay`) while it answers clients between keys (as a
    /// large data set does): with [`Redis::fill`]`(3000)`, about 3 s during
    /// which it answers `TIME`, `INFO` and `PUBLISH` but refuses reads and
    /// writes with `LOADING`. Returns as soon as it answers.
    pub async fn restart_loading_slowly(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch(&[
            "--key-load-delay",
            "1000",
            "--loading-process-events-interval-bytes",
            "1024",
        ])
        .await
    }

    /// The URL nodes are given: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The `--store` argument for a node on this Redis.
    pub fn store_arg(&self) -> String {
        self.url()
    }

    /// Sends one command on a connection of its own and returns the reply
    /// (a Redis error reply is an `Err`).
    pub async fn command(&self, args: &[&str]) -> Result<redis::Value> {
        let [name, rest @ ..] = args else {
            bail!("a Redis command needs a name");
        };
        let exchange = async {
            let client = redis::Client::open(self.url())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd(name)
                .arg(rest)
                .query_async::<redis::Value>(&mut connection)
                .await
        };
        timeout(Duration::from_secs(5), exchange)
            .await
            .context("redis did not answer")?
            .with_context(|| format!("redis {args:?}"))
    }

    /// A command whose answer is a number or nil (`ZSCORE`, `SISMEMBER`, …).
    pub async fn number(&self, args: &[&str]) -> Result<Option<f64>> {
        match self.command(args).await? {
            redis::Value::Nil => Ok(None),
            redis::Value::Int(n) => Ok(Some(n as f64)),
            redis::Value::Double(n) => Ok(Some(n)),
            redis::Value::BulkString(bytes) => {
                let text = String::from_utf8(bytes).context("a score that is not text")?;
                Ok(Some(text.parse().context("a score that is not a number")?))
            }
            other => bail!("redis {args:?}: not a number: {other:?}"),
        }
    }

    /// A command whose answer is text or nil (`GET`, `HGET`, …).
    pub async fn text(&self, args: &[&str]) -> Result<Option<String>> {
        match self.command(args).await? {
            redis::Value::Nil => Ok(None),
            redis::Value::BulkString(bytes) => Ok(Some(String::from_utf8(bytes)?)),
            redis::Value::SimpleString(text) => Ok(Some(text)),
            other => bail!("redis {args:?}: not text: {other:?}"),
        }
    }

    /// Stops the server (SIGKILL by PID) and waits for it to exit.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("killing redis-server")?;
            timeout(Duration::from_secs(10), child.wait())
                .await
                .context("redis-server did not exit")??;
        }
        Ok(())
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the server: a Redis that
    /// stalls, its connections open and unanswered.
    pub async fn pause(&self, paused: bool) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("redis-server is not running")?;
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = timeout(
            Duration::from_secs(10),
            Command::new("kill")
                .args([signal, &pid.to_string()])
                .status(),
        )
        .await
        .context("kill did not return")??;
        if !status.success() {
            bail!("kill {signal} {pid}: {status}");
        }
        Ok(())
    }

    /// Starts it again on the same port: empty, as after a restart without
    /// persistence, or with its last snapshot when it has one.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        if !self.persistent {
            let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        }
        self.launch(&[]).await?;
        // Back with its data, as the tests that restart it expect.
        crate::eventually(START_TIMEOUT, "redis-server loads its data", || async {
            Ok((!self.loading().await?).then_some(()))
        })
        .await
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
