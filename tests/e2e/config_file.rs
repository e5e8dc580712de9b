//! `herald serve --config FILE`: the flags' names as TOML keys, flags and
//! `HERALD_*` variables over the file, errors that name the key and the
//! line; `herald config print`, secrets masked, read back as it was set;
//! unknown `HERALD_*` variables warned about; start-up failures in the
//! requested log format.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;

use crate::herald;

/// `text` written to `herald.toml` in a fresh directory.
fn config_file(text: &str) -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, text)?;
    Ok((dir, path))
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// The `heartbeat_ms` of a new connection's `welcome`: what the hub runs with.
async fn heartbeat_ms(hub: &herald_tests::Hub) -> Result<u64> {
    let client = hub.ws("/ws").await?;
    client.welcome["heartbeat_ms"]
        .as_u64()
        .with_context(|| format!("{}", client.welcome))
}

#[tokio::test]
async fn a_config_file_sets_flags_and_variables_and_flags_override_it() -> Result<()> {
    let (_dir, path) = config_file(
        "# a deployment's settings\nheartbeat-interval = \"1500ms\"\nmax-frame-size = \"16KiB\"\ncompression = false\n",
    )?;
    let from_file = herald().start(&["--config", arg(&path)]).await?;
    ensure!(heartbeat_ms(&from_file).await? == 1500);
    let from_env = herald()
        .start_with_env(
            &["--config", arg(&path)],
            &[("HERALD_HEARTBEAT_INTERVAL", "2s")],
        )
        .await?;
    ensure!(heartbeat_ms(&from_env).await? == 2000);
    let from_flag = herald()
        .start_with_env(
            &["--config", arg(&path), "--heartbeat-interval", "2500ms"],
            &[("HERALD_HEARTBEAT_INTERVAL", "2s")],
        )
        .await?;
    ensure!(heartbeat_ms(&from_flag).await? == 2500);
    // HERALD_CONFIG names the file too.
    let from_variable = herald()
        .start_with_env(&[], &[("HERALD_CONFIG", arg(&path))])
        .await?;
    ensure!(heartbeat_ms(&from_variable).await? == 1500);
    Ok(())
}

#[tokio::test]
async fn a_config_file_with_a_typo_is_refused_naming_the_key_and_its_line() -> Result<()> {
    let (_dir, path) = config_file("bind = \"127.0.0.1:0\"\n\n# limits\nmax-conections = 5000\n")?;
    let output = herald()
        .run(&["serve", "--config", arg(&path)], Duration::from_secs(20))
        .await?;
    ensure!(
        !output.status.success(),
        "serve started with a typo in its file"
    );
    ensure!(
        output.stdout.is_empty(),
        "it claimed to listen: {:?}",
        output.stdout
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:4: unknown key `max-conections` (did you mean `max-connections`?)",
        path.display()
    );
    ensure!(stderr.contains(&expected), "stderr: {stderr}");
    Ok(())
}

#[tokio::test]
async fn a_bad_value_in_a_config_file_names_the_key_the_line_and_why() -> Result<()> {
    let (_dir, path) = config_file("history-size = 10\nhistory-age = \"5 parsecs\"\n")?;
    let output = herald()
        .run(&["serve", "--config", arg(&path)], Duration::from_secs(20))
        .await?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains(&format!("{}:2: `history-age`", path.display()))
            && stderr.contains("unknown unit"),
        "stderr: {stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn config_print_shows_the_effective_configuration_with_secrets_masked() -> Result<()> {
    let (_dir, path) = config_file(
        "jwt-secret = \"file-secret-0123456789\"\nmax-connections = 20000\nallowed-origins = [\"https://a.example\", \"https://b.example\"]\n",
    )?;
    let child = herald()
        .command()
        .args([
            "config",
            "print",
            "--config",
            arg(&path),
            "--queue-size",
            "64",
        ])
        .env("HERALD_API_KEYS", "env-key-0123456789:publish,admin")
        .env_remove("HERALD_DRAIN_WINDOW")
        .spawn()?;
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .context("config print did not exit")??;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout)?;
    ensure!(
        !printed.contains("file-secret") && !printed.contains("env-key"),
        "a secret is shown:\n{printed}"
    );
    let line = |key: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(str::to_owned)
            .with_context(|| format!("no {key} in:\n{printed}"))
    };
    let file = path.display().to_string();
    ensure!(line("jwt-secret")? == format!("jwt-secret = \"********\"  # {file}:1"));
    ensure!(line("api-keys")? == "api-keys = \"********\"  # HERALD_API_KEYS");
    ensure!(line("max-connections")? == format!("max-connections = 20000  # {file}:2"));
    ensure!(line("queue-size")? == "queue-size = 64  # --queue-size");
    ensure!(line("drain-window")? == "drain-window = \"3s\"  # default");
    ensure!(
        line("allowed-origins")?
            == format!(
                "allowed-origins = [\"https://a.example\", \"https://b.example\"]  # {file}:3"
            )
    );
    // What it prints is a configuration file `serve` reads back.
    let unmasked = printed
        .replace(
            "api-keys = \"********\"",
            "api-keys = \"key-0123456789abcdef:publish,admin\"",
        )
        .replace("\"********\"", "\"secret-0123456789abcdef\"");
    let (_again_dir, again) = config_file(&unmasked)?;
    let hub = herald().start(&["--config", arg(&again)]).await?;
    ensure!(hub.http().get("/health/ready").await?.status == 200);
    Ok(())
}

#[tokio::test]
async fn config_print_masks_the_credentials_of_a_redis_url() -> Result<()> {
    for (store, secret) in [
        ("redis://admin:hunter2-pw@127.0.0.1:1/0", "hunter2-pw"),
        ("redis://127.0.0.1:1/0?password=hunter3-pw", "hunter3-pw"),
    ] {
        let (ok, printed) = herald()
            .said(&["config", "print", "--store", store], &[])
            .await?;
        ensure!(ok, "{printed}");
        ensure!(
            !printed.contains(secret) && printed.contains("store = \"redis://"),
            "the store's password is shown:\n{printed}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_printed_configuration_read_back_with_its_masks_refuses_to_start_and_says_why()
-> Result<()> {
    let (_dir, path) = config_file("jwt-secret = \"secret-0123456789abcdef0123456789abcdef\"\n")?;
    let (ok, printed) = herald()
        .said(&["config", "print", "--config", arg(&path)], &[])
        .await?;
    ensure!(ok, "{printed}");
    let (_again_dir, again) = config_file(&printed)?;
    let (started, said) = herald()
        .said(
            &["serve", "--config", arg(&again), "--bind", "127.0.0.1:0"],
            &[],
        )
        .await?;
    ensure!(
        !started && !said.contains("listening on"),
        "the mask was taken for a secret: {said}"
    );
    ensure!(
        said.contains("--jwt-secret") && said.contains("config print"),
        "the refusal does not say the secret is the mask: {said}"
    );
    Ok(())
}

#[tokio::test]
async fn a_herald_log_that_is_not_a_filter_is_said_not_ignored() -> Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = herald()
        .command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("HERALD_LOG", "nonsense===")
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let said = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("HERALD_LOG is not a log filter") {
                return anyhow::Ok(true);
            }
            if line.contains("listening on") {
                break;
            }
        }
        Ok(false)
    })
    .await;
    child.kill().await?;
    ensure!(
        matches!(said, Ok(Ok(true))),
        "no word of the bad HERALD_LOG: {said:?}"
    );
    Ok(())
}

/// The settings of a printed configuration, without where each came from.
fn settings(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split("  # ").next().unwrap_or(line))
        .collect()
}

#[tokio::test]
async fn settings_that_would_keep_nothing_or_serve_nothing_are_refused() -> Result<()> {
    let refused = [
        (["--history-age", "0s"], "--history-age must be positive"),
        (
            ["--header-timeout", "0s"],
            "--header-timeout must be positive",
        ),
        (
            ["--history-memory", "0"],
            "--history-memory must be at least 1",
        ),
        (
            ["--static-dir", "/nonexistent/herald-app"],
            "--static-dir /nonexistent/herald-app is not a directory",
        ),
    ];
    for (flags, said) in refused {
        let args: Vec<&str> = ["config", "print"].into_iter().chain(flags).collect();
        let (ok, printed) = herald().said(&args, &[]).await?;
        ensure!(!ok && printed.contains(said), "{flags:?}: {printed}");
    }
    Ok(())
}

#[tokio::test]
async fn config_print_leaves_the_defaults_derived_from_other_settings_to_be_derived_again()
-> Result<()> {
    let (ok, printed) = herald().said(&["config", "print"], &[]).await?;
    ensure!(ok, "{printed}");
    ensure!(
        printed
            .contains("\n# heartbeat-timeout = \"70s\"  # default: 2 × heartbeat-interval + 10s\n")
            && printed.contains("\n# workers = "),
        "{printed}"
    );
    // Saved, with a longer interval, it runs with the timeout that interval
    // derives rather than the one printed.
    let edited = printed.replace(
        "heartbeat-interval = \"30s\"  # default",
        "heartbeat-interval = \"90s\"",
    );
    ensure!(edited != printed, "{printed}");
    let (_dir, path) = config_file(&edited)?;
    let (ok, again) = herald()
        .said(&["config", "print", "--config", arg(&path)], &[])
        .await?;
    ensure!(
        ok && again.contains("# heartbeat-timeout = \"190s\""),
        "{again}"
    );
    Ok(())
}

#[tokio::test]
async fn config_print_of_values_typed_with_leading_zeros_reads_back_to_the_same_settings()
-> Result<()> {
    let given = [
        (vec!["--unix-socket-mode", "0660"], None),
        (vec!["--queue-size", "010"], None),
        (vec!["--drain-window", "05"], None),
        (vec![], Some(("HERALD_UNIX_SOCKET_MODE", "0660"))),
    ];
    for (flags, env) in given {
        let env = env.as_slice();
        let args: Vec<&str> = ["config", "print"]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        let (ok, printed) = herald().said(&args, env).await?;
        ensure!(ok, "{flags:?} {env:?}: {printed}");
        let (_dir, path) = config_file(&printed)?;
        let (ok, again) = herald()
            .said(&["config", "print", "--config", arg(&path)], &[])
            .await?;
        ensure!(
            ok,
            "{flags:?} {env:?} printed what --config refuses: {again}\n{printed}"
        );
        ensure!(
            settings(&again) == settings(&printed),
            "{flags:?} {env:?} read back differently:\n{printed}\n{again}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_misspelled_herald_variable_is_warned_about_with_the_name_it_is_nearest() -> Result<()> {
    let warning = "HERALD_MAX_CONECTIONS is not a variable herald reads: ignored (did you mean HERALD_MAX_CONNECTIONS?)";
    let (ok, said) = herald()
        .said(&["config", "print"], &[("HERALD_MAX_CONECTIONS", "5")])
        .await?;
    ensure!(ok && said.contains(warning), "config print: {said}");
    // `serve` warns as it starts, before it checks its configuration.
    let (_, said) = herald()
        .said(
            &["serve", "--bind", "127.0.0.1:0", "--max-connections", "0"],
            &[("HERALD_MAX_CONECTIONS", "5")],
        )
        .await?;
    ensure!(said.contains(warning), "serve: {said}");
    let (_, said) = herald()
        .said(
            &["serve", "--bind", "127.0.0.1:0", "--max-connections", "0"],
            &[("HERALD_MAX_CONNECTIONS", "5"), ("HERALD_LOG", "info")],
        )
        .await?;
    ensure!(
        !said.contains("is not a variable herald reads"),
        "a known variable is warned about: {said}"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_value_from_a_variable_names_the_variable_not_the_flag() -> Result<()> {
    let (started, said) = herald()
        .said(&["serve"], &[("HERALD_MAX_CONNECTIONS", "abc")])
        .await?;
    ensure!(!started, "{said}");
    ensure!(
        said.contains("invalid value 'abc' for 'HERALD_MAX_CONNECTIONS (--max-connections)'"),
        "{said}"
    );
    Ok(())
}

/// The last line `herald serve ARGS` writes on stderr as it fails to start.
async fn refusal(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let child = herald()
        .command()
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .spawn()?;
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .context("serve did not exit")??;
    ensure!(!output.status.success(), "serve {args:?} started");
    let stderr = String::from_utf8(output.stderr)?;
    stderr
        .lines()
        .last()
        .map(str::to_owned)
        .with_context(|| format!("serve {args:?} said nothing on stderr"))
}

/// `line` as a JSON `ERROR` log record whose message contains `expected`.
fn is_error_record(line: &str, expected: &str) -> Result<()> {
    let record: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("not one JSON object: {line}"))?;
    ensure!(
        record["level"] == "ERROR"
            && record["timestamp"].is_string()
            && record["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.contains(expected)),
        "{line}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failure_to_start_is_one_json_error_record_when_logs_are_json() -> Result<()> {
    let invalid = "--max-connections must be at least 1";
    let line = refusal(&["--log-format", "json", "--max-connections", "0"], &[]).await?;
    is_error_record(&line, invalid)?;
    // From the variable, whatever HERALD_LOG filters out.
    let dir = tempfile::tempdir()?;
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "")?;
    let store = format!("sqlite:{}/herald.db", not_a_dir.display());
    let line = refusal(
        &["--bind", "127.0.0.1:0", "--store", &store],
        &[("HERALD_LOG_FORMAT", "json"), ("HERALD_LOG", "off")],
    )
    .await?;
    is_error_record(&line, "could not open the store")?;
    // From a configuration file, even one that is refused.
    let (_dir, path) = config_file("log-format = \"json\"\nmax-conections = 5\n")?;
    let line = refusal(&["--config", arg(&path)], &[]).await?;
    is_error_record(&line, "unknown key `max-conections`")?;
    // A value clap refuses.
    let line = refusal(&["--log-format", "json", "--queue-size", "many"], &[]).await?;
    is_error_record(&line, "invalid value 'many'")?;
    // Text stays text.
    let line = refusal(&["--max-connections", "0"], &[]).await?;
    ensure!(
        line == format!("error: invalid configuration: {invalid}"),
        "{line}"
    );
    Ok(())
}

/// Every approval that names no timeout of its own takes `--approval-timeout`:
/// one out of the range an approval may have would refuse each of them, so
/// the hub refuses to start with it.
#[tokio::test]
async fn an_approval_timeout_no_approval_may_have_stops_the_start() -> Result<()> {
    for timeout in ["0s", "169h"] {
        let (ok, said) = herald()
            .said(
                &[
                    "serve",
                    "--bind",
                    "127.0.0.1:0",
                    "--approval-timeout",
                    timeout,
                ],
                &[],
            )
            .await?;
        ensure!(
            !ok && said.contains("--approval-timeout must be between 1ms and 168h"),
            "{timeout}: {said}"
        );
    }
    Ok(())
}
