"""Analysis webhooks (gates, pre-rollout, rollout, rollback, event): payloads and one call.

The payload is Flagger's plus what its users asked for (docs/design.md,
"Outgoing calls"): weights, iteration, failedChecks and threshold; ``event``
hooks also get Flagger's event metadata. Success is any 2xx. A call keeps the
hook's own ``timeout`` per attempt, even beyond the tick's metric budget
(docs/flagger.md). Also here: the ``canaryd check`` lines about deliberate
differences from Flagger in webhooks and alerts.
"""

from __future__ import annotations

import hashlib
from typing import Any

from canaryd import retry
from canaryd.config.models import CanaryConfig, WebhookSpec, read_secret
from canaryd.core.analysis import CanaryState, HookResult
from canaryd.core.events import Event
from canaryd.errors import SecretError, WebhookError
from canaryd.http import Answer, HttpTransport, post_json
from canaryd.notifiers.text import flagger_metadata
from canaryd.service.limits import out_of_resources

BACKOFF_MAX = 2.0
"""Longest pause (seconds) between two attempts of one call, before jitter."""

JITTER_MAX = 0.2
"""Random extra pause (seconds) added to each backoff."""


class _FailedCallError(Exception):
    """Internal: carries a failed attempt's answer or error through the retries."""

    def __init__(self, result: Answer | WebhookError) -> None:
        super().__init__("the webhook call failed")
        self.result = result


def longest_call(hook: WebhookSpec) -> float:
    """The longest one :func:`call` of ``hook`` may take: every attempt times out, plus backoff.

    The tick that polls the hook waits this long for it, even beyond its own
    observation budget (a hook's ``timeout`` is honoured; docs/flagger.md).
    """
    return retry.longest(hook.retries + 1, hook.timeout, BACKOFF_MAX + JITTER_MAX)


def payload(spec: CanaryConfig, state: CanaryState, hook: WebhookSpec) -> dict[str, Any]:
    """The JSON body sent to a webhook of ``spec`` in ``state``."""
    checksum = hashlib.sha256(f"{spec.key}:{state.revision}:{state.rollout_id}".encode())
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "phase": state.phase.value,
        "checksum": checksum.hexdigest()[:16],
        "metadata": {**hook.metadata, **state.metadata},
        "type": hook.type.value,
        "revision": state.revision,
        "canaryWeight": state.canary_weight,
        "primaryWeight": state.primary_weight,
        "iteration": state.iteration,
        "failedChecks": state.failed_checks,
        "threshold": spec.analysis.threshold,
    }


def event_payload(
    spec: CanaryConfig, state: CanaryState, hook: WebhookSpec, event: Event
) -> dict[str, Any]:
    """The JSON body sent to an ``event`` webhook for ``event``.

    As in Flagger, ``metadata`` carries ``eventMessage`` (the one-line summary),
    ``eventType`` (``Normal``, or ``Warning`` for anything alerted above info)
    and ``timestamp`` (Unix milliseconds, as a string); the hook's own metadata
    never overrides these three keys. The whole event is in ``event``.
    """
    body = payload(spec, state, hook)
    body["metadata"] = {**body["metadata"], **flagger_metadata(event)}
    return body


async def call(
    http: HttpTransport,
    spec: CanaryConfig,
    state: CanaryState,
    hook: WebhookSpec,
    idempotency_key: str,
) -> HookResult:
    """Call one webhook (``retries`` extra attempts on failure) and report the result.

    Never raises for the receiver's behaviour: errors become a failing result
    whose ``detail`` names the status and the first bytes of the answer.
    """
    if hook.url is None:
        return HookResult(hook.name, False, "waiting for manual approval (canaryd approve)")
    try:
        secret = read_secret(hook.secret_file, hook.secret_env)
    except SecretError as exc:
        return HookResult(hook.name, False, str(exc))
    body = payload(spec, state, hook)
    url = hook.url

    async def attempt() -> Answer:
        try:
            answer = await post_json(
                http,
                url,
                body,
                timeout=hook.timeout,
                idempotency_key=idempotency_key,
                secret=secret,
                verify_tls=not hook.disableTLS,
            )
        except WebhookError as exc:
            raise _FailedCallError(exc) from exc
        if not answer.ok:
            raise _FailedCallError(answer)
        return answer

    retrying = retry.retrying(
        _FailedCallError,
        attempts=hook.retries + 1,
        wait=retry.jittered_exponential(0.2, BACKOFF_MAX, JITTER_MAX),
    )
    result: Answer | WebhookError
    try:
        result = await retrying(attempt)
    except _FailedCallError as exc:
        result = exc.result
    if isinstance(result, Answer):
        return HookResult(hook.name, result.ok, "" if result.ok else result.describe())
    return HookResult(hook.name, False, str(result), own=out_of_resources(result))
