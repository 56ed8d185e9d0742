"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/v1/openapi.json``.

Written by hand next to the handlers in :mod:`canaryd.service.api`; tests check that it
is a valid OpenAPI document, that its paths are exactly the app's routes, and
(with schemathesis) that the live API answers as it says.
"""

from __future__ import annotations

from typing import Any

from canaryd import __version__
from canaryd.core.analysis import GATES, Phase

NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
ACTIONS = {
    "promote": (
        "Promote the canary now: skip the remaining analysis. A gate that is not approved "
        'is skipped only with {"force": true}.'
    ),
    "abort": "Roll the rollout back now (traffic returns to the primary).",
    "pause": "Pause the analysis: ticks stop judging until resumed.",
    "resume": "Resume a paused analysis.",
}

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": "The request is malformed (invalid JSON, unknown keys, bad revision).",
    "401": "Missing or wrong bearer token.",
    "404": "No such canary.",
    "409": "The command does not fit the canary's current state.",
    "502": "The router refused the command's route (its message is in the error).",
    "413": "The request body is larger than api.max_body_bytes.",
    "503": "The state store is unavailable.",
}


def _errors(*codes: int) -> dict[str, Schema]:
    return {str(c): _json(_ref("Error"), _ERRORS[str(c)]) for c in codes}


_PARAMS = [
    {
        "name": "ns",
        "in": "path",
        "required": True,
        "description": "The canary's namespace.",
        "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 253},
        "example": "prod",
    },
    {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The canary's name.",
        "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 253},
        "example": "web",
    },
]
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _command(
    summary: str,
    operation_id: str,
    *,
    extra: list[Schema] | None = None,
    body: Schema | None = None,
) -> Schema:
    post: Schema = {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["commands"],
        "security": _BEARER,
        "parameters": _PARAMS + (extra or []),
        "responses": {
            "200": _json(_ref("Canary"), "The canary's state after the command."),
            **_errors(400, 401, 404, 409, 413, 502, 503),
        },
    }
    if body is not None:
        post["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    return {"post": post}


PROMOTE_BODY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "force": {"type": "boolean", "description": "Skip gates that are not approved."}
    },
}


def _paths() -> Schema:
    base = "/api/v1/canaries/{ns}/{name}"
    paths: Schema = {
        "/healthz": {
            "get": {
                "summary": "The process is alive.",
                "operationId": "healthz",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json(_ref("Health"), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Config loaded, store open, API listening, every loop running.",
                "operationId": "readyz",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": _json(_ref("Ready"), "Ready."),
                    "503": _json(
                        _ref("Error"),
                        "Starting, reloading or stopping; or behind schedule by more than 1 s "
                        '(then also `"status": "behind"`, `lagSeconds` and `canaries`).',
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "canaryd's own metrics (Prometheus text exposition format).",
                "operationId": "metrics",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(503),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document.",
                "operationId": "openapi",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
        "/api/v1/canaries": {
            "get": {
                "summary": "Every configured canary with its state and last check.",
                "operationId": "listCanaries",
                "tags": ["canaries"],
                "security": _BEARER,
                "responses": {
                    "200": _json(_ref("CanaryList"), "The canaries, in config order."),
                    **_errors(401, 503),
                },
            }
        },
        base: {
            "get": {
                "summary": "One canary with its recent checks and events (newest first).",
                "operationId": "getCanary",
                "tags": ["canaries"],
                "security": _BEARER,
                "parameters": _PARAMS,
                "responses": {
                    "200": _json(_ref("CanaryDetail"), "The canary."),
                    **_errors(401, 404, 503),
                },
            }
        },
        base + "/rollouts": {
            "post": {
                "summary": "Start a rollout of a revision.",
                "operationId": "startRollout",
                "tags": ["commands"],
                "security": _BEARER,
                "parameters": _PARAMS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RolloutRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Canary"), "That revision is already under way."),
                    "201": _json(
                        _ref("Canary"),
                        "The rollout started (a new revision mid-rollout restarts it).",
                    ),
                    **_errors(400, 401, 404, 409, 413, 502, 503),
                },
            }
        },
    }
    paths[base + "/rollouts"]["get"] = _history_list()
    paths[base + "/rollouts/{rollout}"] = _history_one()
    paths["/api/v1/events/stream"] = _stream()
    for action, summary in ACTIONS.items():
        body = PROMOTE_BODY if action == "promote" else None
        paths[f"{base}/{action}"] = _command(summary, f"{action}Canary", body=body)
    gate = {
        "name": "gate",
        "in": "path",
        "required": True,
        "description": "The gate to open.",
        "schema": {"type": "string", "enum": sorted(GATES)},
    }
    paths[base + "/gates/{gate}/approve"] = _command(
        "Open a confirm-* gate by hand (manual gates have no url).",
        "approveGate",
        extra=[gate],
    )
    return paths


_ROLLOUT_PARAM: Schema = {
    "name": "rollout",
    "in": "path",
    "required": True,
    "description": "The rollout's id (rolloutId of the canary, id in the history).",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"},
    "example": "3f2a9c01d4e5",
}
_LIMIT_PARAM: Schema = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "How many rollouts at most (default 50).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 200},
}


def _history_list() -> Schema:
    return {
        "summary": "The canary's rollouts, newest first (past ones as long as history keeps them).",
        "operationId": "listRollouts",
        "tags": ["history"],
        "security": _BEARER,
        "parameters": [*_PARAMS, _LIMIT_PARAM],
        "responses": {
            "200": _json(_ref("RolloutList"), "The rollouts."),
            **_errors(400, 401, 404, 503),
        },
    }


def _history_one() -> Schema:
    return {
        "get": {
            "summary": "One rollout with its checks and events, oldest first.",
            "operationId": "getRollout",
            "tags": ["history"],
            "security": _BEARER,
            "parameters": [*_PARAMS, _ROLLOUT_PARAM],
            "responses": {
                "200": _json(_ref("RolloutDetail"), "The rollout."),
                **_errors(401, 404, 503),
            },
        }
    }


def _stream() -> Schema:
    return {
        "get": {
            "summary": (
                "Server-sent events: a `canary` event (a Canary) whenever a canary changes, "
                "a `hello` event first, comments as heartbeats."
            ),
            "operationId": "streamEvents",
            "tags": ["canaries"],
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "An endless text/event-stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(401),
                "503": _json(_ref("Error"), "Too many open streams, or stopping."),
            },
        }
    }


def _rollout_schema() -> Schema:
    props: Schema = {
        "id": {"type": "string"},
        "revision": _nullable("string"),
        "outcome": {
            "type": "string",
            "enum": ["running", "promoted", "rolled_back", "superseded"],
            "description": "superseded: a newer rollout started before this one ended.",
        },
        "phase": {"type": "string", "enum": [p.value for p in Phase]},
        "reason": _nullable("string", description="Why it failed (the last failure)."),
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "startedAt": _nullable("number"),
        "endedAt": _nullable("number"),
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
            "min": _nullable("number"),
            "max": _nullable("number"),
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
            "reason": _nullable("string", description="What failed (first failure)."),
            "metrics": {"type": "array", "items": metric},
        },
    }


def _canary_schema() -> Schema:
    integer = {"type": "integer", "minimum": 0}
    props: Schema = {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "phase": {"type": "string", "enum": [p.value for p in Phase]},
        "revision": _nullable("string"),
        "rolloutId": _nullable("string"),
        "strategy": {"type": "string", "enum": ["canary", "blue-green", "ab"]},
        "canaryWeight": {"type": "integer", "minimum": 0, "maximum": 100},
        "primaryWeight": {"type": "integer", "minimum": 0, "maximum": 100},
        "maxWeight": {"type": "integer", "minimum": 0, "maximum": 100},
        "failedChecks": integer,
        "threshold": {"type": "integer", "minimum": 1},
        "iteration": integer,
        "iterations": integer,
        "gate": _nullable("string"),
        "approvals": {"type": "array", "items": {"type": "string"}},
        "reason": _nullable("string", description="The last failure of the rollout."),
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "startedAt": _nullable("number"),
        "finishedAt": _nullable("number"),
        "routePending": {
            "type": "boolean",
            "description": "The router has not confirmed the route of this phase yet: a "
            "Failed rollout's rollback (not applied yet), a Promoting rollout's promote.",
        },
        "lastCheck": {
            "anyOf": [_ref("CheckSummary"), {"type": "null"}],
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


def _schemas() -> Schema:
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
        "CheckSummary": {
            "type": "object",
            "required": ["time", "outcome", "reason"],
            "properties": {
                "time": {"type": "number"},
                "outcome": {"type": "string", "enum": ["pass", "fail", "hold"]},
                "reason": _nullable("string", description="The failing metric or webhook."),
            },
        },
        "Check": _check_schema(),
        "Canary": _canary_schema(),
        "CanaryList": {
            "type": "object",
            "required": ["canaries"],
            "properties": {
                "canaries": {"type": "array", "items": _ref("Canary")},
                "role": {"enum": ["leader", "follower"]},  # several replicas (docs/ha.md)
                "leader": {"type": ["string", "null"]},
            },
        },
        "CanaryDetail": {
            "allOf": [
                _ref("Canary"),
                {
                    "type": "object",
                    "required": ["checks", "events"],
                    "properties": {
                        "checks": {"type": "array", "items": _ref("Check")},
                        "events": {"type": "array", "items": _ref("Event")},
                    },
                },
            ]
        },
        "Event": {
            "type": "object",
            "required": ["event", "level", "canary", "time"],
            "properties": {
                "event": {"type": "string", "description": "A name from docs/events.md."},
                "level": {"type": "string", "enum": ["debug", "info", "warning", "error"]},
                "canary": {"type": "string"},
                "revision": _nullable("string"),
                "phase": {"type": "string"},
                "time": {"type": "number"},
            },
            "additionalProperties": True,
        },
        "Rollout": _rollout_schema(),
        "RolloutList": {
            "type": "object",
            "required": ["rollouts"],
            "properties": {"rollouts": {"type": "array", "items": _ref("Rollout")}},
        },
        "RolloutDetail": {
            "allOf": [
                _ref("Rollout"),
                {
                    "type": "object",
                    "required": ["checks", "events"],
                    "properties": {
                        "checks": {"type": "array", "items": _ref("Check")},
                        "events": {"type": "array", "items": _ref("Event")},
                    },
                },
            ]
        },
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


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict on each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "canaryd",
            "version": __version__,
            "description": (
                "Control API of canaryd. Mutating endpoints, and reads unless "
                "api.anonymous_read is on, need `Authorization: Bearer <token>`. "
                'Every error is JSON `{"error": "..."}`.'
            ),
        },
        "servers": [{"url": "http://127.0.0.1:9879"}],
        "security": _BEARER,
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
