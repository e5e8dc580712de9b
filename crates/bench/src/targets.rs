//! The hubs under test: how each is installed, started and reached.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::spec::Adapter;

/// A hub under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Herald,
    /// Python `websockets` with its `broadcast()`.
    PyWebsockets,
    /// FastAPI (Starlette) on uvicorn, a connection manager that serializes once.
    PyFastapi,
    /// Node `ws`.
    NodeWs,
    /// axum + `tokio::sync::broadcast`, TCP_NODELAY on.
    NaiveAxum,
    /// The same with TCP_NODELAY off (Nagle on).
    NaiveAxumNagle,
    /// Pre-encoded frames, one write per frame per socket.
    Floor,
    /// Pre-encoded frames, everything waiting coalesced into one write per socket.
    FloorCoalesced,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Herald,
        Target::PyWebsockets,
        Target::PyFastapi,
        Target::NodeWs,
        Target::NaiveAxum,
        Target::NaiveAxumNagle,
        Target::Floor,
        Target::FloorCoalesced,
    ];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Herald => "herald",
            Target::PyWebsockets => "py-websockets",
            Target::PyFastapi => "py-fastapi",
            Target::NodeWs => "node-ws",
            Target::NaiveAxum => "naive-axum",
            Target::NaiveAxumNagle => "naive-axum-nagle",
            Target::Floor => "floor",
            Target::FloorCoalesced => "floor-coalesced",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn adapter(self) -> Adapter {
        if self == Target::Herald {
            Adapter::Herald
        } else {
            Adapter::Relay
        }
    }

    fn needs_python(self) -> bool {
        matches!(self, Target::PyWebsockets | Target::PyFastapi)
    }
}

/// Where binaries and peers live.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    /// The `herald` binary under test.
    pub herald: PathBuf,
    /// This package's binaries (the load generator, naive axum, the floors).
    pub bin_dir: PathBuf,
    pub work: PathBuf,
}

impl Paths {
    fn venv_python(&self) -> PathBuf {
        self.work.join("venv/bin/python")
    }
    fn peers(&self) -> PathBuf {
        self.root.join("bench/peers")
    }
}

/// Installs what the chosen peers need (a venv under `target/bench`, `npm
/// install` in `bench/peers/node`) and returns the targets that are ready,
/// with a note for each one dropped.
pub fn install(paths: &Paths, targets: &[Target], notes: &mut Vec<String>) -> Vec<Target> {
    let mut python_ok = true;
    if targets.iter().any(|t| t.needs_python()) {
        if let Err(e) = install_python(paths) {
            notes.push(format!("python peers skipped: {e:#}"));
            python_ok = false;
        }
    }
    let mut node_ok = true;
    if targets.contains(&Target::NodeWs) {
        if let Err(e) = install_node(paths) {
            notes.push(format!("node peer skipped: {e:#}"));
            node_ok = false;
        }
    }
    targets
        .iter()
        .copied()
        .filter(|t| (python_ok || !t.needs_python()) && (node_ok || *t != Target::NodeWs))
        .collect()
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn install_python(paths: &Paths) -> Result<()> {
    let python = paths.venv_python();
    if !python.exists() {
        eprintln!(
            "bench: creating the Python venv in {}",
            paths.work.join("venv").display()
        );
        run_quiet(
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(paths.work.join("venv")),
            "python3 -m venv",
        )?;
    }
    let have = Command::new(&python)
        .args(["-c", "import websockets, fastapi, uvicorn"])
        .output()?;
    if !have.status.success() {
        eprintln!("bench: pip install websockets fastapi uvicorn");
        run_quiet(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("-r")
                .arg(paths.peers().join("python/requirements.txt")),
            "pip install",
        )?;
    }
    Ok(())
}

fn install_node(paths: &Paths) -> Result<()> {
    let dir = paths.peers().join("node");
    if !dir.join("node_modules/ws").exists() {
        eprintln!("bench: npm install in {}", dir.display());
        run_quiet(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir),
            "npm install",
        )?;
    }
    Ok(())
}

/// Extra `herald serve` options a scenario needs.
#[derive(Debug, Clone, Default)]
pub struct HeraldOpts {
    pub heartbeat: Option<String>,
    /// `--compression`: accept `permessage-deflate`.
    pub compression: bool,
    pub store: Option<PathBuf>,
    pub unix_socket: Option<PathBuf>,
    /// The Redis the nodes share (`--store redis://…`): started per cell.
    pub redis: Option<String>,
    /// Herald nodes on that Redis (the publisher on the first, the
    /// subscribers on the last); 1 when not set.
    pub nodes: usize,
}

/// A running hub.
#[derive(Debug)]
pub struct Server {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub addr: String,
    pub pid: u32,
}

impl Server {
    /// Starts `target` on a free loopback port, optionally pinned to `cpu`.
    pub fn start(
        target: Target,
        paths: &Paths,
        opts: &HeraldOpts,
        cpu: Option<&str>,
    ) -> Result<Server> {
        let bind = ["--bind", "127.0.0.1:0"];
        let (program, args): (PathBuf, Vec<String>) = match target {
            Target::Herald => {
                let mut args: Vec<String> = ["serve", bind[0], bind[1], "--log-format", "text"]
                    .map(String::from)
                    .into();
                if let Some(hb) = &opts.heartbeat {
                    args.extend(["--heartbeat-interval".into(), hb.clone()]);
                }
                if let Some(db) = &opts.store {
                    args.extend(["--store".into(), format!("sqlite:{}", db.display())]);
                }
                if let Some(redis) = &opts.redis {
                    args.extend(["--store".into(), redis.clone()]);
                }
                if let Some(sock) = &opts.unix_socket {
                    args.extend(["--unix-socket".into(), sock.display().to_string()]);
                }
                if opts.compression {
                    args.push("--compression".into());
                }
                (paths.herald.clone(), args)
            }
            Target::NaiveAxum | Target::NaiveAxumNagle => {
                let nodelay = if target == Target::NaiveAxum {
                    "on"
                } else {
                    "off"
                };
                (
                    paths.bin_dir.join("bench-naive-axum"),
                    vec![
                        bind[0].into(),
                        bind[1].into(),
                        "--nodelay".into(),
                        nodelay.into(),
                    ],
                )
            }
            Target::Floor => (
                paths.bin_dir.join("bench-floor"),
                vec![bind[0].into(), bind[1].into()],
            ),
            Target::FloorCoalesced => (
                paths.bin_dir.join("bench-floor"),
                vec![bind[0].into(), bind[1].into(), "--coalesce".into()],
            ),
            Target::PyWebsockets => (
                paths.venv_python(),
                vec![script(paths, "python/ws_broadcast.py")],
            ),
            Target::PyFastapi => (
                paths.venv_python(),
                vec![script(paths, "python/fastapi_hub.py")],
            ),
            Target::NodeWs => ("node".into(), vec![script(paths, "node/server.js")]),
        };
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let log = std::fs::File::create(paths.work.join(format!("{}.log", target.name())))?;
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .env("HERALD_LOG", "warn");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not start (first line {line:?}; see {}.log)",
                target.name(),
                target.name()
            );
        };
        Ok(Server {
            addr: addr.to_owned(),
            pid,
            child,
            _stdout: stdout,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` for a cell, without persistence, on a free port; killed
/// when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    pub url: String,
}

impl RedisServer {
    /// Starts it (pinned to `cpu` when given) and waits for it to answer.
    pub fn start(paths: &Paths, cpu: Option<&str>) -> Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg("redis-server");
                c
            }
            None => Command::new("redis-server"),
        };
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ])
            .arg("--dir")
            .arg(&paths.work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let redis = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("redis-server did not listen on {port}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `redis-server` can be run here.
pub fn has_redis() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn script(paths: &Paths, rel: &str) -> String {
    paths.peers().join(rel).display().to_string()
}

/// Whether this `herald` takes `--unix-socket`.
pub fn herald_has_unix_socket(paths: &Paths) -> bool {
    Command::new(&paths.herald)
        .args(["serve", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--unix-socket"))
}
