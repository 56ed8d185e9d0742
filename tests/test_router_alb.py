"""The AWS ALB router against moto's server mode (boto3 with endpoint_url, nothing hand-signed)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from moto_server import REGION, Alb, make_alb, run_moto
from support import refused_port
from traffic import route

from canaryd.config import AlbRouter
from canaryd.errors import RouterError
from canaryd.routers.alb import AlbListener

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1 for the whole session; missing moto fails under CI=true."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        message = "moto[server] not installed; install the test extra: pip install -e '.[test]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with run_moto() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Test credentials in the environment; no shared config files, no instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def alb(moto_endpoint: str) -> Alb:
    """A fresh ALB listener forwarding 100/0 to the primary/canary target groups."""
    return make_alb(moto_endpoint)


def router(alb: Alb, **extra: Any) -> AlbListener:
    """An alb router for ``alb``."""
    fields = {
        "type": "alb",
        "listener_arn": alb.listener,
        "primary_target_group_arn": alb.primary,
        "canary_target_group_arn": alb.canary,
        "region": REGION,
        "endpoint_url": alb.endpoint,
        "timeout": 2.0,
    }
    return AlbListener(AlbRouter.model_validate({**fields, **extra}))


@pytest.mark.integration
async def test_route_steps_and_rollback_set_the_listener_weights(alb: Alb) -> None:
    """Each step writes the target-group weights with ModifyListener; rollback writes 100/0."""
    lb = router(alb)

    for canary in (0, 20, 50, 100):
        await lb.apply(route("route", 100 - canary, canary))
        assert alb.weights() == (100 - canary, canary)
    await lb.apply(route("rollback", 0, 100))

    assert alb.weights() == (100, 0)


@pytest.mark.integration
async def test_stickiness_and_other_actions_are_kept(moto_endpoint: str) -> None:
    """Only the forward action's weights change; its stickiness settings stay."""
    alb = make_alb(moto_endpoint, stickiness=True)

    await router(alb).apply(route("route", 50, 50))

    forward = alb.default_actions()[0]["ForwardConfig"]
    assert forward["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": 300}
    assert alb.weights() == (50, 50)


@pytest.mark.integration
async def test_listener_rule_weights(alb: Alb) -> None:
    """With rule_arn the rule's forward action is modified (ModifyRule), not the default."""
    actions = [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": alb.primary, "Weight": 100},
        {"TargetGroupArn": alb.canary, "Weight": 0},
    ]}}]  # fmt: skip
    rule = alb.client.create_rule(
        ListenerArn=alb.listener,
        Priority=1,
        Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
        Actions=actions,
    )["Rules"][0]["RuleArn"]

    await router(alb, rule_arn=rule).apply(route("route", 70, 30))

    rule_actions = alb.client.describe_rules(RuleArns=[rule])["Rules"][0]["Actions"]
    assert alb.weights(rule_actions) == (70, 30)
    assert alb.weights() == (100, 0)


@pytest.mark.integration
async def test_plain_target_group_forward_becomes_weighted(moto_endpoint: str) -> None:
    """A forward to one target group (TargetGroupArn) becomes a weighted ForwardConfig."""
    alb = make_alb(moto_endpoint)
    alb.client.modify_listener(
        ListenerArn=alb.listener,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": alb.primary}],
    )

    await router(alb).apply(route("route", 90, 10))

    assert alb.weights() == (90, 10)


@pytest.mark.integration
async def test_refused_change_names_aws_error_and_keeps_the_split(alb: Alb) -> None:
    """An unknown listener: a RouterError with AWS's code and message; the real one is untouched."""
    await router(alb).apply(route("route", 80, 20))
    missing = alb.listener[:-4] + "0000"

    with pytest.raises(RouterError) as info:
        await router(alb, listener_arn=missing).apply(route("route", 50, 50))

    name = missing.split(":listener/")[-1]
    assert str(info.value) == (
        f"alb {name}: ListenerNotFound: The specified listener does not exist."
    )
    assert alb.weights() == (80, 20)


@pytest.mark.integration
async def test_missing_credentials_are_named(alb: Alb, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without credentials in the standard chain the error says so; nothing is written."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(RouterError, match=r"no AWS credentials \(boto3's standard chain"):
        await router(alb).apply(route("route", 50, 50))

    assert alb.weights() == (100, 0)


async def test_unreachable_endpoint_is_retried_then_an_error() -> None:
    """An endpoint nobody listens on is retried three times within the budget, then an error."""
    cfg = AlbRouter(
        type="alb",
        listener_arn="arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/2",
        primary_target_group_arn="arn:p",
        canary_target_group_arn="arn:c",
        region=REGION,
        endpoint_url=f"http://127.0.0.1:{refused_port()}",
        timeout=0.5,
    )
    lb = AlbListener(cfg)
    started = time.monotonic()

    with pytest.raises(RouterError) as info:
        await lb.apply(route())

    assert str(info.value).startswith("alb app/web/1/2: Could not connect to the endpoint URL")
    assert str(info.value).endswith("(after 3 attempts)")
    assert time.monotonic() - started < lb.budget


def test_missing_region_is_a_router_error() -> None:
    """A config without a region (and none in the environment) is a RouterError, not a traceback."""
    cfg = AlbRouter(
        type="alb",
        listener_arn="arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/2",
        primary_target_group_arn="arn:p",
        canary_target_group_arn="arn:c",
    )

    with pytest.raises(RouterError, match=r"^alb app/web/1/2: NoRegionError: "):
        AlbListener(cfg)
