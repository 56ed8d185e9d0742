"""moto's server mode as a subprocess on 127.0.0.1, and an ALB set up in it for tests.

The ``alb`` router talks to it through boto3 with ``endpoint_url`` (nothing is
signed by hand). :func:`make_alb` creates a VPC, two subnets, a load balancer,
the ``primary`` and ``canary`` target groups and an HTTP listener whose default
action forwards 100/0 to them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from support import entered_on_free_port, free_port
from support.procs import stop_process

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
REGION = "us-east-1"


@contextmanager
def moto_auth(endpoint: str) -> Iterator[None]:
    """Inside the block the server checks every request's IAM access key and policies
    (moto's ``/moto-api/reset-auth``); outside it accepts any credentials again."""

    def post(count: str) -> None:
        url, headers = f"{endpoint}/moto-api/reset-auth", {"Content-Type": "text/plain"}
        request = urllib.request.Request(url, count.encode(), headers)
        with urllib.request.urlopen(request, timeout=READY_TIMEOUT) as answer:
            answer.read()

    post("0")
    try:
        yield
    finally:
        post("inf")


def run_moto() -> AbstractContextManager[str]:
    """Run ``python -m moto.server`` on a free 127.0.0.1 port; yield its URL.

    A port taken meanwhile: started again on a new port (tests/support/ports.py).

    Raises:
        RuntimeError: the server did not accept connections in time.
    """
    return entered_on_free_port(_run_moto_once)


@contextmanager
def _run_moto_once() -> Iterator[str]:
    """Run the server once on a :func:`free_port`; its output goes to a temporary file.

    Raises:
        RuntimeError: it exited or was not ready in time; the message ends with its output.
    """
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        out.seek(0)
                        output = out.read()[-2000:].decode(errors="replace")
                        raise RuntimeError(
                            f"moto server not ready (exit code {proc.poll()}): {output}"
                        ) from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc, STOP_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Alb:
    """An ALB in moto: its listener, the two target groups and a client for checks."""

    endpoint: str
    listener: str
    primary: str
    canary: str
    client: Any

    def default_actions(self) -> list[dict[str, Any]]:
        """The listener's default actions, read with a separate boto3 client."""
        found = self.client.describe_listeners(ListenerArns=[self.listener])
        actions: list[dict[str, Any]] = found["Listeners"][0]["DefaultActions"]
        return actions

    def weights(self, actions: list[dict[str, Any]] | None = None) -> tuple[int, int]:
        """(primary, canary) weights of the first forward action."""
        forward = next(a for a in actions or self.default_actions() if a["Type"] == "forward")
        by_arn = {
            g["TargetGroupArn"]: g["Weight"] for g in forward["ForwardConfig"]["TargetGroups"]
        }
        return by_arn.get(self.primary, 0), by_arn.get(self.canary, 0)


def make_alb(endpoint: str, stickiness: bool = False) -> Alb:
    """Create a VPC, an ALB, two target groups and a listener forwarding 100/0."""
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=REGION)
    elb = boto3.client("elbv2", endpoint_url=endpoint, region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")
        for i, z in ((1, "a"), (2, "b"))
    ]
    suffix = uuid.uuid4().hex[:8]
    lb = elb.create_load_balancer(
        Name=f"web-{suffix}", Subnets=[s["Subnet"]["SubnetId"] for s in subnets]
    )["LoadBalancers"][0]["LoadBalancerArn"]
    primary, canary = (
        elb.create_target_group(Name=f"{n}-{suffix}", Protocol="HTTP", Port=80, VpcId=vpc)[
            "TargetGroups"
        ][0]["TargetGroupArn"]
        for n in ("primary", "canary")
    )
    forward: dict[str, Any] = {
        "TargetGroups": [
            {"TargetGroupArn": primary, "Weight": 100},
            {"TargetGroupArn": canary, "Weight": 0},
        ],
        "TargetGroupStickinessConfig": {"Enabled": stickiness, "DurationSeconds": 300},
    }
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "ForwardConfig": forward}],
    )["Listeners"][0]["ListenerArn"]
    return Alb(endpoint, listener, primary, canary, elb)
