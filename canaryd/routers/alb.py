"""AWS Application Load Balancer router: weighted target groups of a forward action.

The primary and the canary are two target groups behind one listener (its
default action, or one listener rule with ``rule_arn``). One
:meth:`AlbListener.apply`:

1. ``DescribeListeners`` (or ``DescribeRules``) and find the ``forward`` action;
2. when its ``ForwardConfig.TargetGroups`` already carry the wanted weights,
   nothing is written (idempotent);
3. ``ModifyListener`` (or ``ModifyRule``) with the actions as they were, except
   that the forward action's target groups become exactly
   ``[{primary, Weight: p}, {canary, Weight: c}]`` (stickiness is kept);
4. describe again; other weights than the ones written are an error.

AWS checks a modification before applying it, so a refused one leaves the
previous split in place; the error names AWS's code and message. Credentials
come from boto3's standard chain (environment, shared config and credentials
files, SSO, the instance or task role); canaryd's config holds none. The client
resolves them once, when the router is built: temporary credentials (a role, SSO,
web identity) refresh themselves, but keys read from the environment or a shared
file stay as read. A reload therefore builds the router anew when a file of
:func:`credential_files` changed (:func:`canaryd.routers.credential_files`), so a
rotated key file applies (docs/routers.md, "AWS ALB").
``endpoint_url`` points the client elsewhere (a VPC endpoint, a test server).
``rollback`` writes primary 100 / canary 0; ``promote`` writes the request's
weights (the deploy pipeline puts the new version into the primary target
group: docs/routers.md, "AWS ALB").

The calls run in a worker thread (boto3 is synchronous) with botocore's connect
and read timeouts set to ``timeout`` and botocore's own retries off: throttling,
5xx and connection failures are retried here with tenacity (:data:`ATTEMPTS`
tries, jittered backoff), and one apply never takes longer than :attr:`budget`.

Error messages (all :class:`~canaryd.errors.RouterError`)::

    alb app/web/50dc/f2f7: ListenerNotFound: The specified listener does not exist.
    alb app/web/50dc/f2f7: the actions have no forward action
    alb app/web/50dc/f2f7: weights read back {...} differ from the ones written {...}
    alb app/web/50dc/f2f7: no AWS credentials (boto3's standard chain found none)
    alb app/web/50dc/f2f7: Could not connect to the endpoint URL ... (after 3 attempts)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import anyio

from canaryd import retry
from canaryd.config.models import AlbRouter
from canaryd.errors import RouterError
from canaryd.routers import RouteRequest

ATTEMPTS = 3
"""How often one apply is tried when AWS or the network fails transiently."""

BACKOFF_MULTIPLIER = 0.2
"""Seconds; base of the jittered exponential backoff between attempts."""

BACKOFF_MAX = 5.0
"""Seconds; the longest single wait between attempts."""

BUDGET_FACTOR = 4
"""One :meth:`AlbListener.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
    }
)
"""AWS error codes worth another attempt (5xx answers are retried as well)."""


def credential_files(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The files boto3's standard chain reads keys from: the shared credentials file and
    the config file (``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``, else the ones
    in ``~/.aws``), ``~`` expanded as botocore does."""
    names = (
        environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
        environ.get("AWS_CONFIG_FILE") or "~/.aws/config",
    )
    shared, config = (os.path.expanduser(name) for name in names)
    return shared, config


class _TransientError(Exception):
    """Internal: an attempt worth repeating."""


def forward_weights(actions: list[dict[str, Any]]) -> dict[str, int] | None:
    """Target group ARN -> weight of the first forward action; None without one."""
    for action in actions:
        if action.get("Type") == "forward":
            groups = action.get("ForwardConfig", {}).get("TargetGroups")
            if groups is None and action.get("TargetGroupArn"):
                return {action["TargetGroupArn"]: 1}
            return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups or []}
    return None


def with_weights(actions: list[dict[str, Any]], weights: dict[str, int]) -> list[dict[str, Any]]:
    """A copy of ``actions`` whose first forward action has exactly ``weights``.

    Read-only fields AWS returns are kept as they are; a plain ``TargetGroupArn``
    forward becomes a ``ForwardConfig`` (AWS refuses both together).
    """
    out = copy.deepcopy(actions)
    for action in out:
        if action.get("Type") == "forward":
            action.pop("TargetGroupArn", None)
            forward = action.setdefault("ForwardConfig", {})
            forward["TargetGroups"] = [
                {"TargetGroupArn": a, "Weight": w} for a, w in weights.items()
            ]
            break
    return out


class AlbListener:
    """Sets primary/canary target-group weights of an ALB listener or rule.

    Attributes:
        name: the listener (or rule) ARN's resource part, for error messages.
        budget: seconds one :meth:`apply` may take at most, retries included.
    """

    def __init__(self, cfg: AlbRouter) -> None:
        """Create the boto3 client (no request is made; credentials are looked up later).

        Raises:
            RouterError: boto3 is not installed.
        """
        self._cfg = cfg
        arn = cfg.rule_arn or cfg.listener_arn
        self.name = arn.split(":listener-rule/" if cfg.rule_arn else ":listener/")[-1]
        self.budget = cfg.timeout * BUDGET_FACTOR
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise RouterError(
                f"alb {self.name}: boto3 is not installed; install canaryd[aws]"
            ) from exc
        config = Config(
            connect_timeout=cfg.timeout,
            read_timeout=cfg.timeout,
            retries={"total_max_attempts": 1},  # retried here, within the budget
        )
        try:
            self._client = boto3.session.Session().client(
                "elbv2", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=config
            )
        except Exception as exc:  # botocore: NoRegionError, unknown endpoint, bad profile
            raise RouterError(f"alb {self.name}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the boto3 client's connection pool."""
        self._client.close()

    async def apply(self, request: RouteRequest) -> None:
        """Write and verify the weights for ``request`` (see the module docstring).

        Raises:
            RouterError: AWS refused the change (its code and message are in the
                text), no forward action, the read-back differs, no credentials,
                or no answer within :attr:`budget`.
        """
        primary, canary = request.weights()
        wanted = {self._cfg.primary_target_group_arn: primary}
        wanted[self._cfg.canary_target_group_arn] = canary
        attempts = 0

        async def once() -> None:
            nonlocal attempts
            attempts += 1
            await anyio.to_thread.run_sync(self._apply, wanted, abandon_on_cancel=True)

        retrying = retry.retrying(
            _TransientError,
            attempts=ATTEMPTS,
            wait=retry.random_exponential(BACKOFF_MULTIPLIER, BACKOFF_MAX),
        )
        try:
            with anyio.fail_after(self.budget):
                await retrying(once)
        except TimeoutError as exc:
            raise RouterError(f"alb {self.name}: no answer within {self.budget:g}s") from exc
        except _TransientError as exc:
            raise RouterError(f"alb {self.name}: {exc} (after {attempts} attempts)") from exc
        except RouterError as exc:
            raise RouterError(f"alb {self.name}: {exc}") from exc

    def _apply(self, wanted: dict[str, int]) -> None:
        """One describe-modify-describe round (in a worker thread).

        Raises:
            RouterError: a final failure.
            _TransientError: a failure worth another attempt.
        """
        actions = self._describe()
        if forward_weights(actions) is None:
            raise RouterError("the actions have no forward action")
        if forward_weights(actions) == wanted:
            return
        self._modify(with_weights(actions, wanted))
        found = forward_weights(self._describe())
        if found != wanted:
            raise RouterError(f"weights read back {found} differ from the ones written {wanted}")

    def _describe(self) -> list[dict[str, Any]]:
        if self._cfg.rule_arn:
            rules = self._call("describe_rules", RuleArns=[self._cfg.rule_arn])["Rules"]
            return list(rules[0]["Actions"]) if rules else []
        found = self._call("describe_listeners", ListenerArns=[self._cfg.listener_arn])
        listeners = found["Listeners"]
        return list(listeners[0]["DefaultActions"]) if listeners else []

    def _modify(self, actions: list[dict[str, Any]]) -> None:
        if self._cfg.rule_arn:
            self._call("modify_rule", RuleArn=self._cfg.rule_arn, Actions=actions)
        else:
            self._call(
                "modify_listener", ListenerArn=self._cfg.listener_arn, DefaultActions=actions
            )

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Call one elbv2 operation, translating botocore's errors.

        Raises:
            RouterError: AWS refused the call, or no credentials.
            _TransientError: throttling, 5xx, connection failure or timeout.
        """
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            ParamValidationError,
        )

        try:
            answer: dict[str, Any] = getattr(self._client, operation)(**kwargs)
            return answer
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "Unknown"), error.get("Message", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in TRANSIENT_CODES or status >= 500:
                raise _TransientError(f"{code}: {message}") from exc
            raise RouterError(f"{code}: {message}") from exc
        except NoCredentialsError as exc:
            raise RouterError("no AWS credentials (boto3's standard chain found none)") from exc
        except ParamValidationError as exc:
            raise RouterError(str(exc)) from exc
        except BotoCoreError as exc:
            raise _TransientError(str(exc)) from exc
