//! The OpenAPI document: the hub serves the committed one (which `cargo
//! xtask bindings --check` keeps up to date), without a key, and every
//! operation it documents is a route of the hub.

use anyhow::{Context, Result, ensure};
use herald_tests::workspace_root;
use serde_json::Value;

use crate::herald;

#[tokio::test]
async fn the_hub_serves_the_committed_openapi_document_without_a_key() -> Result<()> {
    let path = workspace_root().join("crates/server/openapi/herald.openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let hub = herald()
        .start(&["--api-keys", "admin-key-0123456789:publish,admin"])
        .await?;
    let served = hub.http().get("/api/v1/openapi.json").await?;
    ensure!(served.status == 200, "{} {}", served.status, served.text);
    ensure!(
        served.body == committed,
        "the served document differs from {}",
        path.display()
    );
    Ok(())
}

#[tokio::test]
async fn every_documented_operation_is_a_route_of_the_hub() -> Result<()> {
    let path = workspace_root().join("crates/server/openapi/herald.openapi.json");
    let document: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let hub = herald().start(&[]).await?;
    let client = reqwest::Client::new();
    let paths = document["paths"].as_object().context("no paths")?;
    ensure!(paths.len() >= 14, "only {} paths", paths.len());
    for (template, item) in paths {
        let concrete = template
            .replace("{user_id}", "u1")
            .replace("{id}", "unknown-id")
            .replace("{topic}", "run:r1");
        for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let reply = client
                .request(method.clone(), format!("{}{concrete}", hub.http_url()))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await?;
            let status = reply.status().as_u16();
            let text = reply.text().await?;
            ensure!(
                status != 405 && !(status == 404 && text.contains("no such route")),
                "{method} {concrete} is documented but not routed: {status} {text}"
            );
        }
    }
    Ok(())
}
