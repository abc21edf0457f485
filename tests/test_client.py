"""The client library against a real daemon: typed results, pipelining, reconnects, safe retries."""

import anyio
import pytest

from budgetd.client import BudgetClient, BudgetError, DaemonUnavailable, SyncBudgetClient
from budgetd.model import Usage


@pytest.mark.anyio
async def test_async_client_pipelines_concurrent_calls(daemon):
    async with BudgetClient(daemon.socket) as client:
        hello = await client.hello("test")
        assert hello.protocol == 1 and "record" in hello.ops
        results = []

        async def one(i: int) -> None:
            results.append(await client.record(component="async", model="gpt-4o-mini", input_tokens=i))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        assert len({r.record_id for r in results}) == 200
        status = await client.status()
        assert status.totals.requests == 200
        assert status.totals.input_tokens == sum(range(200))
        page = await client.usage_list(filters={"component": "async"}, limit=1000)
        assert len(page.records) == 200


@pytest.mark.anyio
async def test_async_client_reconnects_after_a_restart(daemon):
    async with BudgetClient(daemon.socket) as client:
        await client.record(Usage(component="r", model="gpt-4o", input_tokens=1))
        daemon.stop()
        with pytest.raises(DaemonUnavailable):
            await client.ping()
        daemon.start()
        recorded = await client.record(component="r", model="gpt-4o", input_tokens=2)
        assert recorded.record_id == 2
        with pytest.raises(BudgetError) as info:
            await client.prices_get("no-such-model")
        assert info.value.code == "not_found"


def test_sync_client_reconnects_and_retries(daemon):
    with SyncBudgetClient(daemon.socket) as client:
        assert client.ping() is not None
        daemon.stop()
        daemon.start()
        recorded = client.record(component="s", model="gpt-4o", input_tokens=3)
        assert recorded.priced and recorded.cost_usd == 7_500 / 1e9
        price = client.prices_get("openai/gpt-4o")
        assert price.price.model == "gpt-4o" and price.resolved_from == "openai/gpt-4o"
        listing = client.prices_list(provider="anthropic")
        assert {p.provider for p in listing.prices} == {"anthropic"} and listing.total == len(listing.prices)


def test_client_rejects_bad_usage_before_sending(daemon):
    with SyncBudgetClient(daemon.socket) as client:
        with pytest.raises(BudgetError) as info:
            client.record(component="x", model="m", input_tokens=-1)
        assert info.value.code == "invalid"
        assert client.status().totals.requests == 0
