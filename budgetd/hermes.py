"""Registration with Tekton's Hermes: register, heartbeat, re-register when forgotten, unregister.

Hermes being away never blocks or fails the daemon: registration is retried
with backoff in the background.
"""

import logging
from dataclasses import dataclass, field

import anyio

import budgetd
from budgetd.backoff import Backoff

log = logging.getLogger("budgetd.hermes")

CAPABILITIES = ["budget.check", "budget.reserve", "budget.record", "budget.report", "budget.route",
                "prices", "alerts"]


@dataclass
class Hermes:
    url: str
    endpoint: str  # where Hermes can reach us (our HTTP door), or "" when we serve only the socket
    heartbeat_s: float = 30.0
    component_id: str | None = None
    token: str | None = None
    registrations: int = 0
    _client: object = field(default=None, repr=False)

    async def run(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=5.0) as client:
            self._client = client
            backoff = Backoff(first=1.0, cap=self.heartbeat_s)
            while True:
                if self.component_id is None:
                    if await self._register():
                        backoff.reset()
                    else:
                        await anyio.sleep(backoff.next())
                        continue
                await anyio.sleep(self.heartbeat_s)
                await self._heartbeat()

    async def _register(self) -> bool:
        import httpx

        body = {"name": "budget", "component": "budget", "version": budgetd.__version__,
                "endpoint": self.endpoint, "capabilities": CAPABILITIES}
        try:
            answer = await self._client.post("/api/register", json=body)  # type: ignore[attr-defined]
            data = answer.json() if answer.status_code < 300 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.info("Hermes at %s is not answering (%s); will retry", self.url, type(exc).__name__)
            return False
        if not isinstance(data, dict) or not (data.get("component_id") or data.get("id")):
            log.warning("Hermes at %s refused the registration (HTTP %s)", self.url, answer.status_code)
            return False
        self.component_id = str(data.get("component_id") or data.get("id"))
        self.token = data.get("token")
        self.registrations += 1
        log.info("registered with Hermes at %s as %s", self.url, self.component_id)
        return True

    def _headers(self) -> dict[str, str]:
        return {"X-Authentication-Token": self.token} if self.token else {}

    async def _heartbeat(self) -> None:
        import httpx

        try:
            answer = await self._client.post(  # type: ignore[attr-defined]
                "/api/heartbeat", json={"component_id": self.component_id}, headers=self._headers())
        except httpx.HTTPError as exc:
            log.info("Hermes heartbeat failed (%s); will retry", type(exc).__name__)
            return
        if answer.status_code in (401, 403, 404):
            log.info("Hermes forgot us (HTTP %s); registering again", answer.status_code)
            self.component_id = None  # the run loop registers again

    async def unregister(self) -> None:
        """Best effort, with a short deadline: shutting down does not wait on Hermes."""
        import httpx

        if self.component_id is None:
            return
        with anyio.move_on_after(3):
            try:
                async with httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=2.0) as client:
                    await client.post("/api/unregister", json={"component_id": self.component_id},
                                      headers=self._headers())
                    log.info("unregistered from Hermes")
            except httpx.HTTPError:
                pass
