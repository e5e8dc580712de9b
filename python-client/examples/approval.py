"""An asyncio producer that asks for approval and stops if the user cancels the task."""

import asyncio

import herald


async def run_task(hub: herald.AsyncHerald, task_id: str) -> None:
    async with hub.control(task_id=task_id) as requests:
        cancelled = asyncio.create_task(first_cancel(requests))
        step = herald.TaskStepResult(
            step="data_validation",
            result={"validated_rows": 1000, "errors": 5},
            completed=True,
            message="Data validation completed, found 5 errors. Continue?",
            status="completed",
        )
        asking = asyncio.create_task(hub.request_approval("user_123", task_id, 1, step, timeout=300))
        done, _ = await asyncio.wait({asking, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        if cancelled in done:
            print("the user cancelled the task:", cancelled.result().reason)
            asking.cancel()
            return
        cancelled.cancel()
        try:
            decision = asking.result()
        except herald.NotFoundError:
            # The hub lost the question (a memory store restarted while it
            # waited): nobody can answer it any more.
            print("the hub no longer holds the approval: ask again once it is back")
            return
        if decision.proceed:
            await hub.publish(f"task:{task_id}", "task.progress", {"progress": 50, "message": decision.feedback})
        else:
            await hub.publish(f"task:{task_id}", "task.cancelled", {"message": f"stopped: {decision.status}"})


async def first_cancel(requests: herald.ControlStream) -> herald.ControlCommand:
    while True:
        try:
            async for request in requests:
                if request.action == "cancel":
                    return request
            raise RuntimeError("the control stream ended")
        except herald.GapError as gap:
            # A request may have been missed (the hub lost its history):
            # say so and keep listening.
            print("control requests may have been missed:", gap)


async def main() -> None:
    async with herald.AsyncHerald() as hub:
        await run_task(hub, "task_456")


if __name__ == "__main__":
    asyncio.run(main())
