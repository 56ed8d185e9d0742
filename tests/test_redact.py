"""Database addresses shown in messages, logs and result files never carry a password
(docs/reliability.md, "Log lines")."""

from __future__ import annotations

import pytest

from canaryd import redact
from canaryd.config import Settings
from canaryd.redact import redact_dsn, scrub, scrub_dsn

CASES = [
    (
        "postgresql://canaryd:s3cret-pw@db.example:5432/canaryd",
        "postgresql://canaryd@db.example:5432/canaryd",
    ),
    (
        "postgresql://canaryd@db/canaryd?sslmode=require&password=s3cret-pw&application_name=c",
        "postgresql://canaryd@db/canaryd?sslmode=require&password=***&application_name=c",
    ),
    (
        "postgres://u@db/c?sslpassword=s3cret-pw&passfile=/etc/s3cret-pw&PASSWORD=s3cret-pw",
        "postgres://u@db/c?sslpassword=***&passfile=***&PASSWORD=***",
    ),
    ("postgresql://u@db/c?password=s3cret@pw", "postgresql://u@db/c?password=***"),
    ("postgresql://u:s3cret?pw@db:5433/c", "postgresql://u@db:5433/c"),
    ("postgresql://u:s3cret/pw@db/c", "postgresql://u@db/c"),
    ("postgresql://u:s3cret@pw@db/c", "postgresql://u@db/c"),
    ("postgresql://:s3cret-pw@db/c", "postgresql://db/c"),
    ("postgresql://u:s3cret-pw@db:notaport/c", "postgresql://u@db:notaport/c"),
    ("postgresql://db/c", "postgresql://db/c"),
    ("sqlite:///var/lib/canaryd/state.db", "sqlite:///var/lib/canaryd/state.db"),
    (
        "host=db port=5432 user=canaryd password=s3cret-pw dbname=canaryd",
        "host=db port=5432 user=canaryd password=*** dbname=canaryd",
    ),
    (
        r"host=db password='s3cret pw\' s3cret-pw' sslpassword = s3cret-pw passfile=/x/s3cret-pw",
        "host=db password=*** sslpassword=*** passfile=***",
    ),
    ("host=db password='s3cret-pw", "host=db password=***"),
]


@pytest.mark.parametrize(
    ("dsn", "shown"),
    CASES,
    ids=[
        "url-password",
        "query-password",
        "query-ssl-and-passfile",
        "query-password-with-at",
        "raw-question-mark",
        "raw-slash",
        "raw-at",
        "no-user",
        "bad-port",
        "no-credentials",
        "sqlite",
        "conninfo",
        "conninfo-quoted",
        "conninfo-unterminated",
    ],
)
def test_a_database_address_keeps_user_host_port_and_database_but_no_password(
    dsn: str, shown: str
) -> None:
    """User, host, port, database and harmless parameters stay; every password goes."""
    assert redact_dsn(dsn) == shown
    assert "s3cret" not in redact_dsn(dsn)


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://u:s3cr%zzet@db/c", 'invalid percent-encoded token: "s3cr%zzet"'),
        ("postgresql://u@db/c?password=s3cr%zzet", 'invalid percent-encoded token: "s3cr%zzet"'),
        ("postgresql://u:s3cr%21et@db/c", "password s3cr!et refused"),
        ("host=db password='s3cr et' x", 'missing "=" after "s3cr et"'),
        ("postgresql://u:s3cret@db/c", "could not connect to postgresql://u:s3cret@db/c"),
    ],
    ids=["bad-escape", "query-bad-escape", "decoded", "conninfo", "whole-address"],
)
def test_a_database_message_loses_the_passwords_of_its_address(
    dsn: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library's message that repeats (part of) a database address shows no password of it,
    nor, once the settings hold that address, does any log line."""
    monkeypatch.setattr(redact, "_SECRETS", {})  # protected values stay this test's
    assert "s3cr" not in scrub_dsn(message, dsn)
    if dsn.startswith("postgresql://"):
        Settings.model_validate({"state": dsn})
        assert "s3cr" not in scrub(f"error connecting in 'pool-1': {message}")
