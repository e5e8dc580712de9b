"""A service that follows every execution and, after a restart, resumes each
execution it had seen where it left off. A pattern cannot recover more: an
execution first published while the service was down is not replayed (see
"What a pattern can and cannot recover" in the README)."""

import asyncio
import json
from pathlib import Path
from typing import Any

import herald

CHECKPOINTS = Path("checkpoints.json")


async def main() -> None:
    saved: dict[str, Any] = json.loads(CHECKPOINTS.read_text()) if CHECKPOINTS.exists() else {}
    async with herald.AsyncHerald() as hub:
        async with hub.subscribe(["execution:*"], since=saved, filter={"types": ["execution.*"]}) as events:
            async for item in events:
                if isinstance(item, herald.Gap):
                    print(f"missed {item.topic} {item.from_seq}..{item.to_seq} ({item.reason}): re-read its state")
                elif isinstance(item, herald.Event):
                    if item.topic == "global":  # broadcasts and system.shutdown reach every subscription
                        continue
                    print(item.topic, item.seq, item.event_type, item.data)
                    CHECKPOINTS.write_text(json.dumps(events.checkpoints))


if __name__ == "__main__":
    asyncio.run(main())
