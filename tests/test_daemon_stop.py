"""Stopping the pipeline never hangs on a task that swallowed its cancellation."""

import asyncio
import logging

from edge_agent.daemon import _cancel_all


async def test_cancel_all_cancels_again_a_task_that_swallowed_the_first_cancel(caplog):
    async def stubborn():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # swallowed once, as asyncio.wait_for can in Python 3.11
        await asyncio.sleep(30)

    async def polite():
        await asyncio.sleep(30)

    tasks = [asyncio.create_task(stubborn(), name="device:stubborn"), asyncio.create_task(polite(), name="tick")]
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(_cancel_all(tasks, grace=0.05), 5)
    assert all(t.cancelled() for t in tasks)
    assert "event=cancel_repeated tasks=device:stubborn" in caplog.text
