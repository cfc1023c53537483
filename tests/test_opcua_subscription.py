"""Subscription parameters against a real asyncua server: deadband on analog values only,
queue size keeping every counter step between two publishes, publishing interval."""

from __future__ import annotations

import asyncio

from opcua_fixtures import NS_PRESS, UaTestServer, Var, device, wait_until

from drivers.opcua.driver import OpcUaDriver
from edge_agent.config import Tag

TAGS = [Tag(name="level", device="ua", address=f"nsu={NS_PRESS};s=Level", type="Double"),
        Tag(name="parts", device="ua", address=f"nsu={NS_PRESS};s=Counter", type="UInt32")]


async def test_deadband_and_queue_size():
    srv = UaTestServer(variables=[Var("Level", "Double", 0.0), Var("Counter", "UInt32", 0)])
    await srv.start()
    dev = device(srv.url, mode="subscribe", publishing_interval=0.4, sampling_interval=0.01, queue_size=10,
                 deadband=5.0)
    drv = OpcUaDriver(dev, TAGS)
    got: list[list] = []

    async def deliver(samples):
        got.append(samples)

    def values(tag):
        return [s.value for batch in got for s in batch if s.tag == tag]

    await drv.connect()
    task = asyncio.create_task(drv.subscribe(deliver))
    try:
        await wait_until(lambda: values("level") == [0.0] and values("parts") == [0], 5, "initial values")
        for v in (1.0, 3.0, 10.0):  # 1 and 3 are within the deadband of 0; 10 is not
            await srv.set("Level", v)
            await asyncio.sleep(0.03)
        for i in range(1, 6):  # five counter steps inside one publishing interval
            await srv.set("Counter", i)
            await asyncio.sleep(0.03)
        await wait_until(lambda: values("parts")[-1:] == [5], 3, "the last counter step")
        await asyncio.sleep(0.5)
        assert values("level") == [0.0, 10.0], "changes within the deadband are not reported"
        assert values("parts") == [0, 1, 2, 3, 4, 5], "the queue keeps every step of a counter (no deadband on it)"
        assert len(got) <= 4, "changes come batched per publish, not one delivery per value"
        sub = drv._client._subscriptions[0]
        assert sub.parameters.RequestedPublishingInterval == 400
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drv.close()
        await srv.stop()
