//! Event type names: the contract's list, and round trips.

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use herald_protocol::EventType;
use herald_protocol::event_type::known_event_types_ts;

/// DESIGN.md's event list, spelled out: 62 names.
const CONTRACT: [&str; 62] = [
    "execution.started",
    "execution.progress",
    "execution.completed",
    "execution.failed",
    "execution.cancelled",
    "task.assigned",
    "task.progress",
    "task.completed",
    "task.failed",
    "task.step_result",
    "task.cancelled",
    "workflow.started",
    "workflow.paused",
    "workflow.resumed",
    "workflow.completed",
    "workflow.failed",
    "step.started",
    "step.progress",
    "step.completed",
    "step.failed",
    "dag.created",
    "dag.updated",
    "dag.node_status_changed",
    "agent.created",
    "agent.updated",
    "agent.deleted",
    "agent.message",
    "agent.thinking",
    "agent.tool_call",
    "manager.delegation_started",
    "manager.coordination_update",
    "manager.decision_made",
    "queue.task_added",
    "queue.task_processed",
    "queue.task_failed",
    "queue.cleared",
    "memory.stored",
    "memory.retrieved",
    "memory.updated",
    "memory.cleared",
    "crew.created",
    "crew.updated",
    "crew.deleted",
    "state.changed",
    "approval.requested",
    "approval.resolved",
    "control.cancel",
    "control.pause",
    "control.resume",
    "cost.updated",
    "metrics.updated",
    "file.created",
    "file.updated",
    "system.startup",
    "system.shutdown",
    "system.error",
    "system.health_check",
    "system.notification",
    "connection.established",
    "connection.lost",
    "connection.heartbeat",
    "connection.reconnected",
];

#[test]
fn every_known_type_round_trips_through_its_name() {
    for known in EventType::KNOWN {
        let parsed = EventType::parse(known.as_str()).unwrap();
        assert_eq!(&parsed, known);
        assert!(
            !matches!(parsed, EventType::Custom(_)),
            "{known} parses as custom"
        );
        let json = serde_json::to_string(known).unwrap();
        assert_eq!(json, format!("\"{}\"", known.as_str()));
        assert_eq!(&serde_json::from_str::<EventType>(&json).unwrap(), known);
    }
}

#[test]
fn known_types_are_exactly_the_contract_list() {
    let known: BTreeSet<&str> = EventType::KNOWN.iter().map(EventType::as_str).collect();
    let contract: BTreeSet<&str> = CONTRACT.into_iter().collect();
    assert_eq!(contract.len(), 62, "the contract list has a duplicate");
    let missing: Vec<_> = contract.difference(&known).collect();
    assert!(missing.is_empty(), "the protocol does not name {missing:?}");
    let extra: Vec<_> = known.difference(&contract).collect();
    assert!(
        extra.is_empty(),
        "the protocol names types the contract does not: {extra:?}"
    );
    assert_eq!(EventType::KNOWN.len(), 62, "a known type is listed twice");
}

#[test]
fn known_event_types_ts_lists_every_known_type() {
    let ts = known_event_types_ts();
    assert!(ts.starts_with("export type KnownEventType ="));
    for name in CONTRACT {
        assert!(
            ts.contains(&format!("| \"{name}\"")),
            "{name} is missing from KnownEventType"
        );
    }
}

#[test]
fn custom_types_pass_through_unchanged() {
    for name in [
        "billing.invoice_paid",
        "a.b.c",
        "x1.y-2",
        "agent.tool_call.started",
    ] {
        let parsed = EventType::parse(name).unwrap();
        assert!(matches!(parsed, EventType::Custom(_)));
        assert_eq!(parsed.as_str(), name);
    }
    assert_eq!(
        EventType::parse("agent.tool_call.started")
            .unwrap()
            .domain(),
        "agent"
    );
}

#[test]
fn malformed_types_are_rejected() {
    for name in [
        "",
        "execution",
        "Execution.started",
        "execution.",
        ".started",
        "a..b",
        "a.1b",
        "a b.c",
        "é.t",
    ] {
        assert!(EventType::parse(name).is_err(), "{name:?} was accepted");
    }
    let too_long = format!(
        "a.{}",
        "b".repeat(herald_protocol::event_type::MAX_EVENT_TYPE_LEN)
    );
    assert!(EventType::parse(&too_long).is_err());
}
