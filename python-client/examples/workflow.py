"""A simulated multi-step agent run, to watch and steer in the Herald console.

It publishes what an agent workflow engine would on ``run:{id}``: the run's
lifecycle (``workflow.*``), its DAG (``dag.created``, then
``dag.node_status_changed`` as each node runs), steps (``step.*``), agent
messages and tool calls (``agent.*``), cost (``cost.updated``) and files
(``file.*``). Its last step asks a person for approval and waits for the
decision; meanwhile ``pause``, ``resume`` and ``cancel`` from the console
(``control.*`` on the run's topic) are obeyed. Each thing it learns from the
hub is printed as one JSON line.

    python examples/workflow.py [--run ID] [--user USER] [--delay SECONDS]

The hub is ``HERALD_URL`` (default ``http://127.0.0.1:8765``), with
``HERALD_API_KEY`` / ``HERALD_TOKEN`` when it asks for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import herald

NODES = [
    ("plan", "Plan", "planner"),
    ("research", "Research", "researcher"),
    ("analyse", "Analyse data", "analyst"),
    ("write", "Write report", "writer"),
    ("review", "Review", "reviewer"),
]
EDGES = [("plan", "research"), ("plan", "analyse"), ("research", "write"), ("analyse", "write"), ("write", "review")]


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Cancelled(Exception):
    """The console asked to cancel the run."""


class Run:
    def __init__(self, hub: herald.AsyncHerald, run_id: str, delay: float) -> None:
        self.hub = hub
        self.run_id = run_id
        self.topic = f"run:{run_id}"
        self.delay = delay
        self.running = asyncio.Event()
        self.running.set()
        self.cancelled = False
        self.tokens = 0

    async def emit(self, event_type: str, data: dict[str, Any], *, key: str | None = None) -> None:
        """Publishes one event after a pause, waiting while the run is paused."""
        await asyncio.sleep(self.delay)
        await self.running.wait()
        if self.cancelled:
            raise Cancelled()
        await self.hub.publish(self.topic, event_type, data, key=key, source="workflow.py")

    async def follow(self, requests: herald.ControlStream) -> None:
        """Acts on the console's control requests, going on past a gap (a
        request may have been missed: the hub lost its history)."""
        while True:
            try:
                await self.follow_until_gap(requests)
                return
            except herald.GapError as gap:
                say(control_gap=str(gap))

    async def follow_until_gap(self, requests: herald.ControlStream) -> None:
        async for request in requests:
            say(control=request.action, reason=request.reason)
            if request.action == "pause" and self.running.is_set():
                self.running.clear()
                await self.hub.publish(self.topic, "workflow.paused", {"reason": request.reason}, key="status")
            elif request.action == "resume" and not self.running.is_set():
                await self.hub.publish(self.topic, "workflow.resumed", {"reason": request.reason}, key="status")
                self.running.set()
            elif request.action == "cancel":
                self.cancelled = True
                self.running.set()

    async def node(self, node: str, status: str, old: str, error: str | None = None) -> None:
        data: dict[str, Any] = {"node_id": node, "old_status": old, "new_status": status}
        if error is not None:
            data["error"] = error
        await self.emit("dag.node_status_changed", data, key=f"node:{node}")

    async def spend(self, tokens: int) -> None:
        self.tokens += tokens
        await self.emit(
            "cost.updated",
            {"metrics": {"tokens": self.tokens, "total_usd": round(self.tokens * 0.000_002, 6)}},
            key="cost",
        )

    async def work(self, number: int, node: str, label: str, agent: str) -> None:
        await self.node(node, "running", "pending")
        await self.emit("step.started", {"step": node, "step_number": number, "message": label})
        await self.emit("agent.message", {"agent": agent, "role": "assistant", "content": f"{label}: starting"})
        if node == "research":
            await self.emit(
                "agent.tool_call",
                {"agent": agent, "tool": "web_search", "arguments": {"query": "event hubs"}, "result": {"hits": 12}},
            )
        if node == "analyse":
            await self.emit("agent.thinking", {"agent": agent, "content": "the latency numbers need a second look"})
            await self.emit(
                "agent.tool_call",
                {"agent": agent, "tool": "python", "arguments": {"code": "df.describe()"}, "result": "ok"},
            )
        if node == "write":
            await self.emit("file.created", {"path": "report.md", "size": 9_420}, key="file:report.md")
        await self.spend(1_500 * number)
        await self.emit("step.completed", {"step": node, "step_number": number, "message": f"{label} done"})
        await self.node(node, "completed", "running")

    async def execute(self, user: str) -> str:
        await self.emit("workflow.started", {"run_id": self.run_id, "name": "research report"}, key="status")
        await self.emit(
            "dag.created",
            {
                "nodes": [{"id": node, "label": label, "status": "pending"} for node, label, _ in NODES],
                "edges": [{"from": a, "to": b} for a, b in EDGES],
            },
            key="dag",
        )
        for number, (node, label, agent) in enumerate(NODES[:-1], start=1):
            await self.work(number, node, label, agent)
        await self.node("review", "running", "pending")
        await self.emit("step.started", {"step": "review", "step_number": 5, "message": "waiting for a person"})
        record = await self.hub.create_approval(
            user,
            self.run_id,
            5,
            herald.TaskStepResult(
                step="review",
                result={"words": 1840, "sources": 12},
                completed=True,
                message="Publish the report?",
                status="completed",
            ),
            timeout=600,
            default_proceed=False,
        )
        say(waiting="approval", callback_id=record.callback_id)
        decision = await self.hub.wait_approval(record)
        say(decision=decision.status, proceed=decision.proceed, feedback=decision.feedback)
        if decision.proceed:
            await self.emit("file.updated", {"path": "report.md", "size": 9_610}, key="file:report.md")
            await self.emit("step.completed", {"step": "review", "step_number": 5, "message": "approved"})
            await self.node("review", "completed", "running")
            await self.emit("workflow.completed", {"run_id": self.run_id}, key="status")
            return "completed"
        await self.emit("step.failed", {"step": "review", "step_number": 5, "message": f"not approved ({decision.status})"})
        await self.node("review", "failed", "running", error=decision.feedback or decision.status)
        await self.emit("workflow.failed", {"message": "the report was not approved"}, key="status")
        return "failed"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run", default=f"demo-{uuid.uuid4().hex[:6]}", help="the run id (topic run:ID)")
    parser.add_argument("--user", default="operator", help="who is asked for the approval")
    parser.add_argument("--delay", type=float, default=0.6, help="seconds between events")
    args = parser.parse_args()
    async with herald.AsyncHerald() as hub:
        run = Run(hub, args.run, args.delay)
        say(run=run.topic, console=f"{hub.endpoint.url.rstrip('/')}/#/runs/{run.topic}")
        async with hub.control(run_id=args.run) as requests:
            follower = asyncio.create_task(run.follow(requests))
            try:
                outcome = await run.execute(args.user)
            except Cancelled:
                await hub.publish(run.topic, "workflow.cancelled", {"reason": "cancelled from the console"}, key="status")
                outcome = "cancelled"
            finally:
                follower.cancel()
        say(done=outcome)


if __name__ == "__main__":
    asyncio.run(main())
