"""The AWS ALB router against moto's server mode (boto3 with endpoint_url, nothing hand-signed)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto_server import REGION, Alb, make_alb, moto_auth, run_moto
from support import refused_port
from traffic import route

from canaryd.config import AlbRouter
from canaryd.errors import RouterError
from canaryd.routers.alb import AlbListener, credential_files
from canaryd.service.adapters import Adapters, with_secret_files

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
    return AlbListener(config(alb, **extra))


def config(alb: Alb, **extra: Any) -> AlbRouter:
    """An alb router's config for ``alb``."""
    fields = {
        "type": "alb",
        "listener_arn": alb.listener,
        "primary_target_group_arn": alb.primary,
        "canary_target_group_arn": alb.canary,
        "region": REGION,
        "endpoint_url": alb.endpoint,
        "timeout": 2.0,
    }
    return AlbRouter.model_validate({**fields, **extra})


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


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ("~/.aws/credentials", "~/.aws/config")),
        (
            {"AWS_SHARED_CREDENTIALS_FILE": "/run/c", "AWS_CONFIG_FILE": "~/cfg"},
            ("/run/c", "~/cfg"),
        ),
    ],
    ids=["defaults", "environment"],
)
def test_credential_files_are_the_ones_boto3_reads(
    environ: dict[str, str], expected: tuple[str, str]
) -> None:
    """The files are named by the environment, else the ones in ``~/.aws``; ``~`` expanded."""
    assert credential_files(environ) == tuple(os.path.expanduser(p) for p in expected)


def _iam_user(endpoint: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An IAM user allowed everything, and two access keys of it (CreateAccessKey answers)."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION)
    user = f"canaryd-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    allow = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allow]})
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=policy)
    first, second = (iam.create_access_key(UserName=user)["AccessKey"] for _ in range(2))
    return user, first, second


def _rotate(endpoint: str, user: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Delete the ``old`` key, signed with the ``new`` one, as an operator rotating keys does."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=new["AccessKeyId"],
        aws_secret_access_key=new["SecretAccessKey"],
    )
    iam.delete_access_key(UserName=user, AccessKeyId=old["AccessKeyId"])


def _credentials(path: Path, key: dict[str, Any]) -> None:
    """Write an AWS shared credentials file holding ``key``."""
    path.write_text(
        f"[default]\naws_access_key_id = {key['AccessKeyId']}\n"
        f"aws_secret_access_key = {key['SecretAccessKey']}\n"
    )


@pytest.mark.integration
async def test_a_reload_applies_rotated_credentials(
    alb: Alb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router kept across reloads is built anew once its AWS credentials file changed:
    after a key rotation (old key deleted) the rebuilt router routes, the kept one could not."""
    user, old, new = _iam_user(alb.endpoint)
    credentials = tmp_path / "aws-credentials"
    _credentials(credentials, old)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg, adapters = config(alb), Adapters()

    def reload() -> AlbListener:
        with adapters.replacing() as rebuild:
            routers = rebuild.build("router", {"alb": cfg}, build, with_secret_files)
        return routers["alb"]

    def build(name: str, cfg: AlbRouter) -> AlbListener:
        return AlbListener(cfg)

    kept = reload()
    assert reload() is kept, "kept while nothing changed (no ~/.aws/config is no change)"
    with moto_auth(alb.endpoint):
        await kept.apply(route("route", 80, 20))
        _rotate(alb.endpoint, user, old, new)
        _credentials(credentials, new)
        with pytest.raises(RouterError, match="InvalidClientTokenId"):
            await kept.apply(route("route", 60, 40))
        rebuilt = reload()
        await rebuilt.apply(route("route", 60, 40))

    assert rebuilt is not kept
    assert alb.weights() == (60, 40)
    await adapters.aclose()
