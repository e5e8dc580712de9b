//! The deployment files in `deploy/`: what can be checked without Docker or
//! systemd. Each `herald` command line they hold is checked by the binary
//! itself with `herald config print`, which reads flags, variables and the
//! `--config` file as `serve` does and validates the whole configuration
//! without binding anything; the health checks ask routes the hub has.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use herald_tests::workspace_root;

use crate::herald;

fn read(relative: &str) -> Result<String> {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// `herald config print` with `serve_args` (without `serve`) and `env`.
async fn check(serve_args: &[String], env: &[(&str, &str)]) -> Result<String> {
    let mut command = herald().command();
    command.args(["config", "print"]).args(serve_args);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn()?;
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .context("config print did not exit")??;
    ensure!(
        output.status.success(),
        "herald config print {serve_args:?} refused it: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Every `--flag` in `args` appears in `herald serve --help`.
async fn flags_exist(args: &[String]) -> Result<()> {
    let help = herald()
        .run(&["serve", "--help"], Duration::from_secs(20))
        .await?;
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        ensure!(
            help.contains(&format!("{flag} ")),
            "herald serve has no {flag}"
        );
    }
    Ok(())
}

/// A JSON array on a line (`command: [...]`, `CMD [...]`).
fn json_args(line: &str) -> Result<Vec<String>> {
    let start = line.find('[').context("no [")?;
    Ok(serde_json::from_str(&line[start..])?)
}

#[tokio::test]
async fn the_compose_files_node_commands_are_valid_herald_serve_command_lines() -> Result<()> {
    let compose = read("deploy/compose.yaml")?;
    let commands: Vec<Vec<String>> = compose
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("command: [\"serve\""))
        .map(json_args)
        .collect::<Result<_>>()?;
    ensure!(commands.len() == 3, "three nodes, found {}", commands.len());
    ensure!(compose.contains("redis:"), "no Redis service");
    for command in commands {
        let args = &command[1..];
        ensure!(
            args.windows(2)
                .any(|w| w[0] == "--store" && w[1].starts_with("redis://")),
            "a node without the shared Redis store: {args:?}"
        );
        flags_exist(args).await?;
        // The secrets the file takes from the environment.
        let env = [
            ("HERALD_API_KEYS", "compose-key-0123456789:publish,admin"),
            ("HERALD_JWT_SECRET", "compose-secret-0123456789"),
        ];
        ensure!(compose.contains("HERALD_API_KEYS:") && compose.contains("HERALD_JWT_SECRET:"));
        check(args, &env).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_systemd_unit_runs_a_valid_command_line_with_the_example_config() -> Result<()> {
    let unit = read("deploy/herald.service")?;
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .context("no ExecStart")?;
    let words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    ensure!(
        words.first().is_some_and(|w| w.ends_with("/herald")),
        "{exec}"
    );
    ensure!(words.get(1).map(String::as_str) == Some("serve"), "{exec}");
    // The service's dynamic user cannot read a root-owned file under /etc:
    // its config file comes as a credential systemd reads for it.
    let config = words
        .iter()
        .skip_while(|word| *word != "--config")
        .nth(1)
        .context("no --config")?;
    let credential = config
        .strip_prefix("${CREDENTIALS_DIRECTORY}/")
        .with_context(|| format!("--config {config} is not a credential"))?;
    ensure!(
        unit.lines()
            .any(|line| line == format!("LoadCredential={credential}:/etc/herald/herald.toml")),
        "no LoadCredential= for {credential}"
    );
    // That file is the example one in deploy/.
    let example = workspace_root().join("deploy/herald.toml");
    let args: Vec<String> = words[2..]
        .iter()
        .map(|arg| {
            if arg == config {
                example.display().to_string()
            } else {
                arg.clone()
            }
        })
        .collect();
    flags_exist(&args).await?;
    let printed = check(&args, &[]).await?;
    ensure!(printed.contains("drain-window = \"5s\""), "{printed}");
    let stop: u64 = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .context("no TimeoutStopSec")?;
    ensure!(
        stop >= 15,
        "TimeoutStopSec={stop} is shorter than drain window + grace"
    );
    ensure!(unit.contains("KillSignal=SIGTERM"));
    Ok(())
}

#[tokio::test]
async fn the_dockerfile_runs_a_valid_command_as_non_root_with_a_readiness_healthcheck() -> Result<()>
{
    let dockerfile = read("deploy/Dockerfile")?;
    ensure!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2,
        "not multi-stage"
    );
    ensure!(dockerfile.contains("\nUSER herald"), "runs as root");
    let cmd = dockerfile
        .lines()
        .find(|line| line.starts_with("CMD ["))
        .map(json_args)
        .context("no CMD")??;
    ensure!(cmd.first().map(String::as_str) == Some("serve"), "{cmd:?}");
    let env = [
        ("HERALD_API_KEYS", "docker-key-0123456789:publish,admin"),
        ("HERALD_JWT_SECRET", "docker-secret-0123456789"),
    ];
    flags_exist(&cmd[1..]).await?;
    check(&cmd[1..], &env).await?;
    let health = dockerfile
        .lines()
        .find_map(|line| line.trim().strip_prefix("CMD [\"curl\""))
        .context("no curl HEALTHCHECK")?;
    ensure!(health.contains("/health/ready"), "{health}");
    // The route the health check asks answers on a running hub.
    let hub = herald().start(&[]).await?;
    ensure!(hub.http().get("/health/ready").await?.status == 200);
    ensure!(Path::new(&workspace_root().join(".dockerignore")).exists());
    Ok(())
}
