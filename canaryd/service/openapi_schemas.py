"""The component schemas of the OpenAPI document (:mod:`canaryd.service.openapi`): what
the API's answers and request bodies hold (docs/api.md)."""

from __future__ import annotations

from typing import Any

from canaryd.core.analysis import GATES, Phase

REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str, **extra: Any) -> Schema:
    """A value of JSON type ``kind`` or null."""
    return {"type": [kind, "null"], **extra}


def _rollout_schema() -> Schema:
    props: Schema = {
        "id": {"type": "string"},
        "revision": nullable("string"),
        "outcome": {
            "type": "string",
            "enum": ["running", "promoted", "rolled_back", "superseded"],
            "description": "superseded: a newer rollout started before this one ended.",
        },
        "phase": {"type": "string", "enum": [p.value for p in Phase]},
        "reason": nullable("string", description="Why it failed (the last failure)."),
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "startedAt": nullable("number"),
        "endedAt": nullable("number"),
        "checkCount": {"type": "integer", "minimum": 0, "description": "Checks recorded."},
        "failedCheckCount": {
            "type": "integer",
            "minimum": 0,
            "description": "Checks that failed.",
        },
    }
    return {"type": "object", "required": sorted(props), "properties": props}


def _check_schema() -> Schema:
    metric = {
        "type": "object",
        "required": ["name", "value", "min", "max"],
        "properties": {
            "name": {"type": "string"},
            "value": {
                "type": ["number", "string", "null"],
                "description": "null: no data; 'nan'/'inf' as strings.",
            },
            "min": nullable("number"),
            "max": nullable("number"),
            "error": {"type": "string"},
            "dryRun": {
                "type": "boolean",
                "description": "A dry-run metric: judged and shown, never failing a check.",
            },
        },
    }
    return {
        "type": "object",
        "required": ["time", "tick", "outcome", "failedChecks", "reason", "metrics"],
        "properties": {
            "time": {"type": "number"},
            "tick": {"type": "integer"},
            "outcome": {"type": "string", "enum": ["pass", "fail", "hold"]},
            "canaryWeight": {"type": "integer"},
            "iteration": {"type": "integer"},
            "failedChecks": {"type": "integer"},
            "reason": nullable("string", description="What failed (first failure)."),
            "metrics": {"type": "array", "items": metric},
        },
    }


def _canary_schema() -> Schema:
    integer = {"type": "integer", "minimum": 0}
    props: Schema = {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "phase": {"type": "string", "enum": [p.value for p in Phase]},
        "revision": nullable("string"),
        "rolloutId": nullable("string"),
        "strategy": {"type": "string", "enum": ["canary", "blue-green", "ab"]},
        "canaryWeight": {"type": "integer", "minimum": 0, "maximum": 100},
        "primaryWeight": {"type": "integer", "minimum": 0, "maximum": 100},
        "maxWeight": {"type": "integer", "minimum": 0, "maximum": 100},
        "failedChecks": integer,
        "threshold": {"type": "integer", "minimum": 1},
        "iteration": integer,
        "iterations": integer,
        "gate": nullable("string"),
        "approvals": {"type": "array", "items": {"type": "string"}},
        "reason": nullable("string", description="The last failure of the rollout."),
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "startedAt": nullable("number"),
        "finishedAt": nullable("number"),
        "routePending": {
            "type": "boolean",
            "description": "The router has not confirmed the route of this phase yet: a "
            "Failed rollout's rollback (not applied yet), a Promoting rollout's promote.",
        },
        "lastCheck": {
            "anyOf": [ref("CheckSummary"), {"type": "null"}],
            "description": "The most recent check (lists and details only).",
        },
        "forced": {"type": "boolean", "description": "promote with force skipped a gate."},
        "skippedGates": {
            "type": "array",
            "items": {"type": "string", "enum": sorted(GATES)},
            "description": "The gates a forced promote skipped.",
        },
    }
    return {
        "type": "object",
        "required": sorted(set(props) - {"lastCheck", "forced", "skippedGates"}),
        "properties": props,
    }


def schemas() -> Schema:
    """Every component schema, by name."""
    return {**_health_schemas(), **_canary_schemas(), **_rollout_schemas()}


def _with_history(name: str) -> Schema:
    """Schema ``name`` with its ``checks`` and ``events`` (the detail answers)."""
    return {
        "allOf": [
            ref(name),
            {
                "type": "object",
                "required": ["checks", "events"],
                "properties": {
                    "checks": {"type": "array", "items": ref("Check")},
                    "events": {"type": "array", "items": ref("Event")},
                },
            },
        ]
    }


def _health_schemas() -> Schema:
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "canaries"],
            "properties": {
                "status": {"const": "ready"},
                "canaries": {"type": "integer"},
                "role": {"enum": ["leader", "follower"]},  # several replicas (docs/ha.md)
                "leader": {"type": ["string", "null"]},
            },
        },
    }


def _canary_schemas() -> Schema:
    return {
        "CheckSummary": {
            "type": "object",
            "required": ["time", "outcome", "reason"],
            "properties": {
                "time": {"type": "number"},
                "outcome": {"type": "string", "enum": ["pass", "fail", "hold"]},
                "reason": nullable("string", description="The failing metric or webhook."),
            },
        },
        "Check": _check_schema(),
        "Canary": _canary_schema(),
        "CanaryList": {
            "type": "object",
            "required": ["canaries"],
            "properties": {
                "canaries": {"type": "array", "items": ref("Canary")},
                "role": {"enum": ["leader", "follower"]},  # several replicas (docs/ha.md)
                "leader": {"type": ["string", "null"]},
            },
        },
        "CanaryDetail": _with_history("Canary"),
        "Event": {
            "type": "object",
            "required": ["event", "level", "canary", "time"],
            "properties": {
                "event": {"type": "string", "description": "A name from docs/events.md."},
                "level": {"type": "string", "enum": ["debug", "info", "warning", "error"]},
                "canary": {"type": "string"},
                "revision": nullable("string"),
                "phase": {"type": "string"},
                "time": {"type": "number"},
            },
            "additionalProperties": True,
        },
    }


def _rollout_schemas() -> Schema:
    return {
        "Rollout": _rollout_schema(),
        "RolloutList": {
            "type": "object",
            "required": ["rollouts"],
            "properties": {"rollouts": {"type": "array", "items": ref("Rollout")}},
        },
        "RolloutDetail": _with_history("Rollout"),
        "RolloutRequest": {
            "type": "object",
            "required": ["revision"],
            "additionalProperties": False,
            "properties": {
                "revision": {"type": "string", "pattern": REVISION_PATTERN},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }
