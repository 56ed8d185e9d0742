"""Configuration loader: secret files and variables, and environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from loader_helpers import canary, load, problems, write

from canaryd.config.loader import load_config
from canaryd.errors import ConfigError

# --------------------------------------------------------------------------- secrets


def test_secret_file_missing(tmp_path: Path) -> None:
    """A secret file that does not exist is a problem naming the resolved path."""
    assert problems(tmp_path, "api: {token_file: token}\n") == [
        "c.yaml:1:7: api.token_file: cannot read secret file token: No such file or directory"
    ]


def test_secret_file_readable_by_others(tmp_path: Path) -> None:
    """A world-readable secret file is a problem that shows the chmod fixing it."""
    write(tmp_path, "token", "s3cret", mode=0o644)
    path = write(tmp_path, "c.yaml", "api: {token_file: token}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{path}:1:7: api.token_file: secret file {tmp_path}/token is readable by others; "
        f"run: chmod o-r {tmp_path}/token"
    ]


def test_secret_file_relative_to_config(tmp_path: Path) -> None:
    """A relative *_file path is resolved against the directory of the file naming it."""
    write(tmp_path, "secrets/token", "s3cret", mode=0o600)
    loaded = load(tmp_path, "api: {token_file: secrets/token}\n")
    assert loaded.settings.api.token_file == str(tmp_path / "secrets" / "token")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "api: {token_env: API_TOKEN}\n",
            "c.yaml:1:7: api.token_env: environment variable API_TOKEN is not set",
        ),
        (
            "routers: {m: {type: webhook, url: http://x, secret_file: k, secret_env: HOME}}\n",
            "c.yaml:1:61: routers.m.secret_env: set secret_file or secret_env, not both",
        ),
    ],
    ids=["env-unset", "file-and-env"],
)
def test_secret_env(tmp_path: Path, text: str, expected: str) -> None:
    """Secret variables must be set in the given environment, and not doubled by a file."""
    write(tmp_path, "k", "key", mode=0o600)
    assert problems(tmp_path, text, environ={"HOME": "/"}) == [expected]


# --------------------------------------------------------------------------- environment


def test_env_overrides_nested_key(tmp_path: Path) -> None:
    """CANARYD_A__B__C overrides a nested file value (names are case-insensitive)."""
    env = {
        "CANARYD_PROVIDERS__PROM__ADDRESS": "http://thanos:9090",
        "CANARYD_PROVIDERS__PROM__INSECURESKIPVERIFY": "true",
        "CANARYD_LOG__LEVEL": "debug",
    }
    settings = load(tmp_path, canary(), environ=env).settings
    assert settings.providers["prom"].model_dump()["address"] == "http://thanos:9090"
    assert settings.providers["prom"].model_dump()["insecureSkipVerify"] is True
    assert settings.log.level == "debug"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CANARYD_LISTEN": "nowhere"},
            "<env CANARYD_LISTEN>:0:0: listen: must be HOST:PORT, e.g. 127.0.0.1:9879 "
            "(got 'nowhere')",
        ),
        (
            {"CANARYD_PROVIDERS__PROM__TIMEOUT": "soon"},
            "<env CANARYD_PROVIDERS__PROM__TIMEOUT>:0:0: providers.prom.timeout: "
            "invalid duration 'soon': expected e.g. 30s, 1m, 1h30m or 500ms",
        ),
        (
            {"CANARYD_CANARIES": "[{oops"},
            "<env CANARYD_CANARIES>:0:0: canaries: CANARYD_CANARIES must hold JSON for this key",
        ),
        (
            {"CANARYD_CANARIES": "[{}]"},
            "<env CANARYD_CANARIES>:0:0: canaries[0]: missing key 'name'",
        ),
    ],
    ids=["scalar", "nested", "not-json", "json-replaces-list"],
)
def test_env_bad_value(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    """Problems from environment values are located at <env NAME>:0:0, naming the variable."""
    assert problems(tmp_path, canary(), environ=env)[:1] == [expected]


def test_explicit_environ_ignores_process_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit environ replaces os.environ, and os.environ is used when none is given."""
    monkeypatch.setenv("CANARYD_LISTEN", "127.0.0.1:1234")
    path = write(tmp_path, "c.yaml", "listen: 127.0.0.1:9879\n")
    assert load_config(path, environ={}).settings.listen == "127.0.0.1:9879"
    assert load_config(path).settings.listen == "127.0.0.1:1234"
