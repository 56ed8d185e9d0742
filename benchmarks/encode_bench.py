"""What a passing tick's JSON costs, encoder against encoder, side by side in one process.

::

    python benchmarks/encode_bench.py --rounds 9

The documents are a real passing tick of ``scale.py``'s canaries (a blue/green
rollout in progress, two metrics): the state, the check record and the events
the store writes (``canaryd.service.store.codec``), and the events' log lines.
Each way of writing them runs in turn, round after round; the best round of
each is printed in CPU microseconds per tick (benchmarks/README.md, round 5).
Run it with ``PYTHONPATH`` pointing at another tree's copy (and that tree's
copy of this file) to compare trees.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from scale import Options, build_settings

from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Emit, MetricValue, Observation, Phase
from canaryd.jsonenc import COMPACT
from canaryd.logs import _ENCODE, configure, iso_utc_now, log_event
from canaryd.service.store.codec import dumps, event_to_dict, state_to_dict

UNUSED = "http://127.0.0.1:9"
"""The configured Prometheus and router addresses: nothing is sent to them."""


def tick_documents() -> tuple[list[dict[str, Any]], list[Any]]:
    """The store's documents of one passing tick, and its events."""
    settings = build_settings(Options(canaries=2), UNUSED, UNUSED, None)  # type: ignore[arg-type]
    spec = settings.canaries[1]
    now = time.time()
    state = CanaryState(
        phase=Phase.PROGRESSING, revision="r0", rollout_id="c00001-r0", started_at=now, iteration=1
    )
    values = tuple(MetricValue(f"m{j}", 99.5, 90.0) for j in range(2))
    decision = core.decide(spec, state, Observation(metrics=values), now)
    events = [e.event for e in decision.effects if isinstance(e, Emit)]
    assert decision.record is not None
    docs = [state_to_dict(decision.state), decision.record.as_dict()]
    return [*docs, *(event_to_dict(e) for e in events)], events


def log_lines(events: list[Any]) -> list[dict[str, Any]]:
    """The objects ``log_event`` writes for ``events`` (no context variables bound)."""
    return [
        {
            "canary": e.canary_name,
            "namespace": e.namespace,
            "revision": e.revision,
            "phase": e.phase,
            **e.fields,
            "event": e.name,
            "level": e.level,
            "timestamp": iso_utc_now(),
        }
        for e in events
    ]


def ways(docs: list[dict[str, Any]], events: list[Any]) -> dict[str, Callable[[], object]]:
    """Each way of writing the tick's JSON, as a function that writes all of it once."""
    stdlib = json.JSONEncoder(separators=COMPACT, default=str, allow_nan=False).encode
    spaced = json.JSONEncoder(default=repr).encode
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    lines = log_lines(events)
    return {
        "store: json.JSONEncoder (the fallback)": lambda: [stdlib(d) for d in docs],
        "store: orjson, checked (codec.dumps)": lambda: [dumps(d) for d in docs],
        "store: orjson alone (no checks)": lambda: [orjson.dumps(d) for d in docs],
        "store: events' fields alone": lambda: [dumps(e.fields) for e in events],
        "log: TimeStamper (before)": lambda: [stamper(None, "info", {}) for _ in events],
        "log: iso_utc_now": lambda: [iso_utc_now() for _ in events],
        "log: JSON, json.JSONEncoder spaced": lambda: [spaced(line) for line in lines],
        "log: JSON, orjson checked (logs._ENCODE)": lambda: [_ENCODE(line) for line in lines],
        "log: whole lines (log_event)": lambda: list(map(log_event, events)),
    }


def measure(fns: dict[str, Callable[[], object]], rounds: int, n: int) -> dict[str, float]:
    """Best CPU microseconds per call of each, ``rounds`` rounds of ``n`` calls in turn."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.process_time()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.process_time() - t) / n * 1e6)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    """Print the best CPU microseconds per tick of each way."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--calls", type=int, default=2000, help="ticks per round")
    args = p.parse_args(argv)
    configure("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as we do
    docs, events = tick_documents()
    print(f"{len(docs)} store documents, {len(events)} log lines a tick")
    for name, us in measure(ways(docs, events), args.rounds, args.calls).items():
        print(f"{name:40} {us:6.1f} us/tick")


if __name__ == "__main__":
    main()
