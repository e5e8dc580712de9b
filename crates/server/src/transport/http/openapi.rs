//! The OpenAPI 3.1 document of the HTTP API, served at
//! `/api/v1/openapi.json` and committed as `crates/server/openapi/herald.openapi.json`
//! (`cargo xtask bindings` writes it, `--check` keeps it honest).
//!
//! The operations come from each handler's `#[utoipa::path]`. The schemas
//! come from the types themselves with `schemars`, the generator that also
//! writes the protocol's JSON Schema (OpenAPI 3.1 schemas are JSON Schema
//! 2020-12): the request and response types of the handlers, and the
//! protocol types they carry, each under its own name.

use std::sync::LazyLock;

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use herald_protocol::event::{PublishBody, PublishReceipt};
use herald_protocol::payload::{ApprovalDecision, ApprovalRecord, NewApproval};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use herald_protocol::api::{
    ApprovalList, ConnectionInfo, ConnectionList, ConsoleConfig, HubStatus, LastEvent, NodeInfo,
    NodeList, TopicHistory, TopicList, TopicSummary,
};
use herald_protocol::frame::Snapshot;

use super::admin::{Disconnected, Health, Liveness, Readiness};
use super::error::ApiError;
use super::events::{Notice, PublishAnswer};
use super::{admin, approvals, console, events, topics};

/// The operations, from the handlers' `#[utoipa::path]`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald HTTP API",
        description = "Publish events, broadcasts and user messages; ask for approvals and wait \
            for the decisions; read history; administer connections; health and metrics. Errors \
            are `{code, message}` (`ApiError`). With `--api-keys`, send `Authorization: Bearer \
            KEY` with the scope each operation names. Subscribers use the WebSocket protocol \
            (`GET /ws`), described in the protocol's JSON Schema, not here; the dialects of the \
            systems Herald replaces (`/compat/…`) are described in `docs/compat/`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        events::publish_events,
        events::broadcast,
        events::user_message,
        approvals::create,
        approvals::get,
        approvals::list,
        admin::connections,
        admin::connection,
        admin::disconnect,
        admin::topic_events,
        topics::list,
        topics::snapshot,
        admin::nodes,
        admin::status,
        admin::health,
        admin::live,
        admin::ready,
        admin::metrics,
        console::config,
        document_handler,
    ),
    tags(
        (name = "events", description = "Publishing"),
        (name = "approvals", description = "Human-in-the-loop approvals"),
        (name = "admin", description = "Connections, topics, history, nodes and status (`admin` scope)"),
        (name = "health", description = "Health, readiness, metrics and the console's configuration (no key needed)"),
    )
)]
struct Operations;

/// The schemas of everything the handlers take and answer, by name, with
/// whatever they refer to.
fn schemas() -> Map<String, Value> {
    macro_rules! schemas {
        ($($ty:ty),+ $(,)?) => {{
            let mut generator = SchemaGenerator::new(
                SchemaSettings::draft2020_12()
                    .with(|settings| settings.definitions_path = "/components/schemas".into()),
            );
            $( generator.subschema_for::<$ty>(); )+
            generator.take_definitions(true)
        }};
    }
    schemas!(
        PublishBody,
        PublishAnswer,
        PublishReceipt,
        Notice,
        ApiError,
        NewApproval,
        ApprovalRecord,
        ApprovalDecision,
        ApprovalList,
        ConnectionList,
        ConnectionInfo,
        Disconnected,
        TopicList,
        TopicSummary,
        LastEvent,
        TopicHistory,
        NodeList,
        NodeInfo,
        HubStatus,
        Snapshot,
        ConsoleConfig,
        Health,
        Liveness,
        Readiness,
    )
}

/// The whole document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
    &DOCUMENT
}

fn build() -> Value {
    let mut document = serde_json::to_value(Operations::openapi()).unwrap_or_default();
    document["info"]["version"] = Value::from(env!("CARGO_PKG_VERSION"));
    document["components"] = json!({
        "schemas": schemas(),
        "securitySchemes": {
            "api_key": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key from `--api-keys` (`key1:publish,admin;key2:publish`), \
                    with the scope the operation names.",
            }
        }
    });
    retry_after(&mut document);
    herald_protocol::schema::sorted(document)
}

/// Declares `Retry-After` on the error answers that carry it: 429 (the
/// publish rate limit) and 503 (the store unreachable, the hub draining),
/// whether stated alone or in a `5XX` range. Optional: a 500 or an approval
/// refused for too many pending has none. The health checks' 503s are not
/// errors and have none.
fn retry_after(document: &mut Value) {
    let header = json!({
        "description": "Whole seconds to wait before trying again (sent with 429 over the \
            publish rate limit and with 503)",
        "required": false,
        "schema": {"type": "integer", "minimum": 0},
    });
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (status, response) in responses.iter_mut() {
            if matches!(status.as_str(), "429" | "503" | "5XX") && is_error(response) {
                response["headers"]["Retry-After"] = header.clone();
            }
        }
    }
}

/// Whether a response's body is the contract's `{code, message}` error.
fn is_error(response: &Value) -> bool {
    response["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ApiError"
}

/// The committed file's contents: pretty JSON with sorted keys and a final
/// newline, so it only changes when the API does.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(document()).unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi_document",
    tag = "health",
    summary = "This OpenAPI document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object))
)]
pub(super) async fn document_handler() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Json(document())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`.
    fn refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_and_every_schema_is_referenced() {
        let document = document();
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        let mut found = Vec::new();
        refs(document, &mut found);
        for target in &found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{target} is not a component"));
            assert!(schemas.contains_key(name), "{target} names no schema");
        }
        for name in schemas.keys() {
            let target = format!("#/components/schemas/{name}");
            assert!(found.contains(&target.as_str()), "{name} is never used");
        }
    }

    #[test]
    fn every_429_and_503_answer_declares_retry_after() {
        let mut declared = 0;
        for item in document()["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("a path item").values() {
                let Some(responses) = operation.get("responses").and_then(Value::as_object) else {
                    continue;
                };
                for (status, response) in responses {
                    if matches!(status.as_str(), "429" | "503") && is_error(response) {
                        assert!(
                            response["headers"]["Retry-After"].is_object(),
                            "a {status} without Retry-After: {response}"
                        );
                        declared += 1;
                    }
                }
            }
        }
        // The four publishing routes' 429s, and the reads' 503s.
        assert!(declared >= 10, "only {declared} answers declare it");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_api_route() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/api/v1/events", "post"),
            ("/api/v1/broadcast", "post"),
            ("/api/v1/users/{user_id}/messages", "post"),
            ("/api/v1/approvals", "post"),
            ("/api/v1/approvals", "get"),
            ("/api/v1/approvals/{id}", "get"),
            ("/api/v1/connections", "get"),
            ("/api/v1/connections/{id}", "get"),
            ("/api/v1/connections/{id}", "delete"),
            ("/api/v1/topics/{topic}/events", "get"),
            ("/api/v1/status", "get"),
            ("/api/v1/openapi.json", "get"),
            ("/health", "get"),
            ("/health/live", "get"),
            ("/health/ready", "get"),
            ("/metrics", "get"),
        ] {
            assert!(
                paths.get(path).and_then(|item| item.get(method)).is_some(),
                "{method} {path} is not documented"
            );
        }
    }
}
