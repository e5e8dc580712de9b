"""The README's ten-line producer is examples/producer.py, and it works: run
as a process against a real hub, it publishes and waits for the decision a
user gives over WebSocket."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from .conftest import Hub, browser, repo_file

pytestmark = pytest.mark.anyio
LIMIT = 30.0


def test_the_readme_shows_the_tested_example() -> None:
    example = repo_file("python-client/examples/producer.py").read_text()
    code = example.split('"""', 2)[2].strip()
    assert len(code.splitlines()) <= 10
    readme = repo_file("python-client/README.md").read_text()
    assert f"```python\n{code}\n```" in readme


async def test_the_ten_line_producer_publishes_and_gets_the_decision(hub: Hub) -> None:
    async with browser(hub, "user_id=user_123&topics=execution:exec_123") as user:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(repo_file("python-client/examples/producer.py")),
            env={**os.environ, "HERALD_URL": hub.url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            progress = await user.until(lambda f: f.get("event_type") == "execution.progress", LIMIT)
            assert progress["data"] == {"progress": 75, "message": "75%"}
            request = await user.until(lambda f: f.get("event_type") == "approval.requested", LIMIT)
            assert request["data"]["step_result"]["message"] == "Training failed, retry?"
            await user.send({"action": "confirm", "callback_id": request["data"]["callback_id"], "proceed": True, "feedback": "go"})
            out, err = await asyncio.wait_for(process.communicate(), LIMIT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["approved", "True", "go", "user_123"]
