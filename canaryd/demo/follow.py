"""Follow one demo rollout: start it through canaryd's API, sample until it ends.

:class:`Follow` polls the API, the router's weights and the metrics every
:data:`POLL_INTERVAL`, shows them on the view, and records them in the
:class:`~canaryd.demo.results.ScenarioResult`; after a promotion,
:func:`probe_versions` checks which version the traffic path serves.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from canaryd.client import Client
from canaryd.demo.parts import Traffic
from canaryd.demo.receiver import AlertReceiver
from canaryd.demo.results import Bound, Sample, ScenarioResult, number
from canaryd.demo.scenarios import Scenario, Timings
from canaryd.demo.view import View
from canaryd.errors import ProviderError, RouterError
from canaryd.service.daemon import Daemon

POLL_INTERVAL = 0.5
"""Seconds between two looks at canaryd's API, the router and the metrics."""

TAIL_SECONDS = 2.0
"""Seconds the demo keeps sampling after the verdict, so the chart shows what followed."""

ALERT_WAIT = 10.0
"""Seconds to wait for the final alert to reach the receiver after the verdict."""

API_TIMEOUT = 5.0
"""Timeout of each request to canaryd's API."""

PROBE_REQUESTS = 50
"""Requests sent through the traffic path after a promotion to see which version answers."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """The rollout to follow and where to show it.

    Attributes:
        key: the canary, ``namespace/name``.
        api: canaryd's API address.
        token: the API token.
        scenario: the scenario being run.
        timings: its timings (the deadline among them).
        view: where progress is shown.
    """

    key: str
    api: str
    token: str
    scenario: Scenario
    timings: Timings
    view: View


class Follow:
    """Starts the rollout through the API and follows it until promotion or rollback."""

    def __init__(
        self,
        run: Rollout,
        daemon: Daemon,
        traffic: Traffic,
        receiver: AlertReceiver,
        result: ScenarioResult,
    ) -> None:
        self.run_, self.daemon, self.traffic, self.receiver = run, daemon, traffic, receiver
        self.result, self.seen = result, set[tuple[Any, ...]]()
        runner = daemon.runners[run.key]
        self.queries = [(m.spec.name, m.provider, m.query) for m in runner.metrics]
        result.threshold = runner.spec.analysis.threshold
        result.bounds = [
            Bound(m.spec.name, m.spec.thresholdRange.min, m.spec.thresholdRange.max)
            for m in runner.metrics
            if m.spec.thresholdRange is not None
        ]

    async def run(self) -> None:
        """Start the rollout, sample until it ends (and :data:`TAIL_SECONDS` more), then
        wait for the final alert and, after a promotion, probe which version answers.

        Raises:
            ClientError: canaryd's API refused the rollout or stopped answering.
        """
        view, run = self.run_.view, self.run_
        view.begin(run.scenario, self.result.parts)
        async with Client(run.api, run.token, API_TIMEOUT) as client:
            self.started = time.time()
            meta = {"scenario": run.scenario.name}
            await client.post(f"{run.key}/rollouts", {"revision": "v2", "metadata": meta})
            with anyio.move_on_after(run.timings.deadline):
                while True:
                    if await self._step(client):
                        break
                    await anyio.sleep(POLL_INTERVAL)
            with anyio.move_on_after(TAIL_SECONDS):  # the chart shows what followed
                while True:
                    await anyio.sleep(POLL_INTERVAL)
                    await self._sample()
        final = "rollout.promoted" if self.result.phase == "Succeeded" else "rollout.rolled_back"
        await self.receiver.wait_for(final, ALERT_WAIT)
        self.result.alerts = list(self.receiver.alerts)
        self.result.final_raw = await self._raw_weights()
        self.result.promotes = self.traffic.promotes
        if self.result.outcome == "promoted":
            self.result.served_after = await probe_versions(self.traffic.url, PROBE_REQUESTS)
        view.end(self.result)

    async def _step(self, client: Client) -> bool:
        """One look at the API, the router and the metrics; True once the rollout ended."""
        body = await client.get(self.run_.key)
        live = await self._sample()
        r = self.result
        r.phase, r.reason, r.failed_checks = body["phase"], body["reason"], body["failedChecks"]
        r.checks = list(reversed(body.get("checks", [])))
        for event in reversed(body.get("events", [])):
            key = (event.get("time"), event.get("event"), event.get("failedChecks"))
            if key not in self.seen:
                self.seen.add(key)
                r.events.append(event)
                self.run_.view.event(event["time"] - self.started, event, r.bounds)
        self.run_.view.status(body, live, r.bounds)
        if r.phase in ("Succeeded", "Failed") and r.ended is None:
            r.ended = (body.get("finishedAt") or time.time()) - self.started
        return r.ended is not None

    async def _raw_weights(self) -> tuple[int, int] | None:
        try:
            return await self.traffic.weights()
        except RouterError:
            return None

    async def _sample(self) -> dict[str, float | None]:
        live: dict[str, float | None] = {}
        for name, provider, query in self.queries:
            try:
                value = await self.daemon.services.providers[provider].query(query, budget=1.0)
            except ProviderError:
                value = None
            live[name] = number(value)
        raw = await self._raw_weights()
        scale = self.traffic.scale
        primary, canary = (round(w * 100 / scale) for w in raw) if raw else (None, None)
        now = time.time() - self.started
        self.result.samples.append(Sample(now, primary, canary, raw, live))
        return live


async def probe_versions(url: str, requests: int) -> Counter[str]:
    """Send ``requests`` GETs through the traffic path; count the versions that answered.

    The demo apps answer ``"<name> <version>"``; anything else counts as
    ``HTTP <status>`` or ``no answer``.
    """
    counts: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for _ in range(requests):
            try:
                async with session.get(url) as resp:
                    body = (await resp.text()).split()
                    ok = resp.status == 200 and len(body) == 2
                    counts[body[1] if ok else f"HTTP {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError):
                counts["no answer"] += 1
    return counts
