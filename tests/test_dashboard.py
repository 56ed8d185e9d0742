"""The dashboard in a real headless browser: Debian's chromium driven by Playwright, against a
real daemon process whose Prometheus is a stand-in HTTP server (the provider's seam).

Screenshots go to ``$CANARYD_TEST_ARTIFACTS/dashboard`` (default ``test-artifacts/``);
``docs/dashboard.png`` is one of them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from daemons import TOKEN, api_url, daemon_process, write_config
from playwright.async_api import Browser, Page, async_playwright, expect
from receiver import Receiver

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(180)]

ARTIFACTS = Path(os.environ.get("CANARYD_TEST_ARTIFACTS", "test-artifacts")) / "dashboard"
HOSTILE = '<img src=x onerror="window.pwned=1">'
"""Metadata a rollout is started with: the page must show it as text, never as markup."""


WATCH = """
window.seen = {phases: [], weights: []};
new MutationObserver(() => {
  const row = document.querySelector('tr[data-canary="prod/web"]');
  if (!row) return;
  window.seen.phases.push(row.querySelector(".phase").textContent);
  window.seen.weights.push(row.querySelector(".bar-label").textContent);
}).observe(document.getElementById("main"), {childList: true, subtree: true});
"""
"""Notes every phase and weight the list row shows, as the page redraws it."""


def chromium() -> str:
    """Debian's chromium; missing fails under ``CI=true`` and skips elsewhere."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def fake_prometheus(success: float = 99.5) -> AsyncIterator[str]:
    """An HTTP server answering Prometheus queries: ``success`` about ``success``, ``latency``
    about 120, and range queries (compare metrics) with the same noise for both sides."""
    wobble = itertools.cycle([0.0, 0.3, -0.2, 0.4, -0.1, 0.2])

    async def query(request: web.Request) -> web.Response:
        form = await request.post()
        q = str(form.get("query") or request.query.get("query", ""))
        step = next(wobble)
        value = 120 + 40 * step if "latency" in q else success + step
        data = {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]}
        return web.json_response({"status": "success", "data": data})

    async def query_range(request: web.Request) -> web.Response:
        form = await request.post()
        start = float(str(form.get("start") or request.query.get("start", "0")))
        base = next(wobble)  # canary and primary: the same noise, shifted a little
        values = [[start + 5 * i, str(100 + base + (i * 7919 % 13) / 3)] for i in range(12)]
        data = {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}
        return web.json_response({"status": "success", "data": data})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", query)
    app.router.add_route("*", "/api/v1/query_range", query_range)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _config(tmp_path: Path, prom: str, router: Receiver, *, anonymous_read: bool) -> Path:
    compare = {"direction": "increase", "lookback": "1m", "step": "5s", "tolerance": 0.25}
    metrics: list[dict[str, Any]] = [
        {"name": "success-rate", "query": "success", "thresholdRange": {"min": 99}},
        {"name": "latency-p99", "query": "latency", "thresholdRange": {"max": 500}},
        {"name": "latency-vs-primary", "query": 'lat{job="{{ target }}"}', "compare": compare},
    ]
    analysis: dict[str, Any] = {
        "interval": "700ms",
        "threshold": 3,
        "stepWeight": 10,
        "maxWeight": 50,
        "metrics": [{"interval": "1m", **m} for m in metrics],
        "webhooks": [{"name": "release", "type": "confirm-promotion"}],
    }
    token = {"token_file": str(tmp_path / "api-token"), "anonymous_read": anonymous_read}
    return write_config(
        tmp_path,
        [{"name": "web", "namespace": "prod", "router": "lb", "analysis": analysis}],
        api=token,
        providers={"prom": {"type": "prometheus", "address": prom, "timeout": "2s"}},
        routers={"lb": {"type": "webhook", "url": router.url + "/route", "timeout": "2s"}},
    )


@asynccontextmanager
async def daemon(
    tmp_path: Path, *, anonymous_read: bool, success: float = 99.5
) -> AsyncIterator[str]:
    """A real ``canaryd run`` process with canary ``prod/web``; yields its base URL."""
    async with fake_prometheus(success) as prom, Receiver() as router:
        config = _config(tmp_path, prom, router, anonymous_read=anonymous_read)
        url = api_url(config)
        with daemon_process(config, tmp_path / "daemon.log"):
            await _until_ready(url, tmp_path / "daemon.log")
            yield url


async def _until_ready(url: str, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        with anyio.move_on_after(20):
            while True:
                try:
                    async with session.get(url + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await anyio.sleep(0.1)
    tail = await anyio.Path(log).read_text()
    raise AssertionError(f"daemon not ready within 20s:\n{tail[-3000:]}")


async def post(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A POST to the API with the token; returns the JSON answer."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s, s.post(url + path, json=body, headers=headers) as r:
        assert r.status in (200, 201), await r.text()
        answer: dict[str, Any] = await r.json()
        return answer


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium from the machine (never a downloaded build)."""
    path = chromium()
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def shot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot artifact and return its path."""
    await anyio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def use_token(page: Page) -> None:
    """Type the API token into the page, as a person would."""
    await page.fill("#token", TOKEN)
    await page.click("#use-token")
    await expect(page.locator("#mode")).to_have_text("token set: actions enabled")


async def test_rollout_progresses_on_screen_and_approve_opens_the_gate(tmp_path: Path) -> None:
    """Without a reload, the page follows a rollout to its gate; Approve then promotes it."""
    async with daemon(tmp_path, anonymous_read=False) as url, browser() as b:
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url + "/ui/")
        await use_token(page)
        row = page.locator('tr[data-canary="prod/web"]')
        await expect(row.locator(".phase")).to_have_text("Initialized")
        await page.evaluate(WATCH)  # window.seen: what the row showed; gone if the page reloads
        await post(url, "/api/v1/canaries/prod/web/rollouts", {"revision": "v2.4.1"})
        gate = row.locator(".gate")
        await expect(gate).to_have_text("waiting: confirm-promotion", timeout=30_000)
        await expect(row.locator(".revision")).to_have_text("v2.4.1")
        await expect(row.locator(".bar-label")).to_contain_text("canary 50%")
        seen = await page.evaluate("window.seen")
        assert "Progressing" in seen["phases"]
        assert len(set(seen["weights"]) - {"canary 0% · primary 100%"}) >= 2, seen
        await shot(page, "list")
        await row.locator("a").click()
        await expect(page.locator("#phase")).to_have_text("WaitingPromotion")
        await expect(page.locator(".metric")).to_have_count(2)
        compare = page.locator("#compare tbody tr")
        await expect(compare.locator("td").first).to_have_text("latency-vs-primary")
        await expect(compare.locator("td").nth(2)).to_contain_text("[")  # its interval
        await expect(page.locator("#weight-chart")).to_be_visible()
        await shot(page, "canary-at-gate")
        await shot(page, "dashboard", full_page=False)  # the one in docs/dashboard.png
        await page.click("#approve")
        await expect(page.locator("#confirm-text")).to_contain_text("promotion gate")
        await page.click("#confirm-ok")
        await expect(page.locator("#phase")).to_have_text("Succeeded", timeout=20_000)
        await expect(page.locator("#rollouts tr[data-rollout] .outcome")).to_have_text("promoted")
        assert await page.evaluate("window.seen !== undefined")  # the same document throughout
        await shot(page, "canary-promoted")
        assert errors == []


async def test_page_says_why_a_rollout_failed(tmp_path: Path) -> None:
    """A rolled-back rollout shows its reason (the metric against its bound) and its red checks."""
    async with daemon(tmp_path, anonymous_read=True, success=97.0) as url, browser() as b:
        await post(url, "/api/v1/canaries/prod/web/rollouts", {"revision": "v9"})
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(url + "/ui/#/canary/prod/web")
        await expect(page.locator("#phase")).to_have_text("Failed", timeout=30_000)
        await expect(page.locator("#why")).to_contain_text("success-rate")
        past = page.locator("#rollouts tr[data-rollout]")
        await expect(past.locator(".outcome")).to_have_text("rolled_back")
        await expect(past.locator(".reason")).to_contain_text("success-rate")
        await past.locator("a").click()
        await expect(page.locator("h1")).to_contain_text("rollout")
        chart = page.locator('.metric[data-metric="success-rate"]')
        assert await chart.locator("circle.fail").count() >= 3  # the threshold's failed checks
        await shot(page, "rolled-back")


async def test_page_without_token_cannot_act(tmp_path: Path) -> None:
    """With anonymous reads, a page without the token shows the canary but its actions do nothing.

    The buttons are disabled; a button enabled by hand is refused by the API (401)
    and the canary stays where it was. Metadata from outside is shown as text.
    """
    async with daemon(tmp_path, anonymous_read=True) as url, browser() as b:
        await post(
            url,
            "/api/v1/canaries/prod/web/rollouts",
            {"revision": "v3", "metadata": {"note": HOSTILE}},
        )
        page = await b.new_page()
        await page.goto(url + "/ui/#/canary/prod/web")
        await expect(page.locator("#mode")).to_have_text("read-only (no token)")
        await expect(page.locator("#read-only")).to_be_visible()
        await expect(page.locator("#metadata")).to_have_text(f"note={HOSTILE}")
        assert await page.locator("#main img").count() == 0
        await expect(page.locator("#abort")).to_be_disabled()
        # a person who edits the page enables the button: the API still refuses
        await page.evaluate(
            "(b => { b.disabled = false; b.click(); })(document.getElementById('abort'))"
        )
        await page.click("#confirm-ok")
        await expect(page.locator("#action-result")).to_contain_text("refused")
        await shot(page, "read-only")
        async with aiohttp.ClientSession() as s, s.get(url + "/api/v1/canaries/prod/web") as r:
            state = await r.json()
        assert state["phase"] != "Failed" and state["revision"] == "v3"
        assert await page.evaluate("window.pwned === undefined")


async def test_page_asks_for_the_token_when_reads_need_it(tmp_path: Path) -> None:
    """Without ``anonymous_read`` the page shows no canary until the token is given."""
    async with daemon(tmp_path, anonymous_read=False) as url, browser() as b:
        page = await b.new_page()
        await page.goto(url + "/ui/")
        await expect(page.locator("#token-needed")).to_be_visible()
        assert await page.locator("#canaries").count() == 0
        assert await page.evaluate("sessionStorage.length") == 0
        await use_token(page)
        await expect(page.locator('tr[data-canary="prod/web"]')).to_be_visible()
        assert TOKEN not in page.url
        stored = await page.evaluate("JSON.stringify(sessionStorage)")
        assert json.loads(stored) == {"canaryd.token": TOKEN}
        assert await page.context.cookies() == []
