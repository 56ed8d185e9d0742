"""Request headers of the HTTP metrics providers: auth from secret files, encoded lines.

Secrets are read from their files on every request (a rotated token is picked up
without a restart); a header that cannot be sent is refused, naming the header,
never its value (docs/providers.md, "Common behaviour").
"""

from __future__ import annotations

from canaryd.config.models import header_problem, read_secret
from canaryd.errors import ProviderError, SecretError
from canaryd.http import basic_auth


def auth_headers(
    extra: dict[str, str],
    *,
    token_file: str | None = None,
    username: str | None = None,
    password_file: str | None = None,
    scheme: str = "Bearer",
) -> dict[str, str]:
    """Configured headers plus ``Authorization`` from a token file or basic auth.

    Raises:
        ProviderError: a secret file cannot be read, or both kinds of auth are set.
    """
    headers = dict(extra)
    if token_file and username:
        raise ProviderError("set the token file or username/password_file, not both")
    if token_file:
        headers["Authorization"] = f"{scheme} {secret_text(token_file)}"
    elif username:
        headers["Authorization"] = basic_auth(username, secret_text(password_file))
    return headers


def secret_text(path: str | None) -> str:
    """The secret in the file at ``path`` (``""`` without a path), read now.

    Raises:
        ProviderError: the file cannot be read or is readable by others.
    """
    try:
        secret = read_secret(path)
    except SecretError as exc:
        raise ProviderError(str(exc)) from exc
    return secret.get_secret_value() if secret else ""


def header_lines(headers: dict[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines; a header that cannot be sent is refused.

    The rule is the config's (:func:`canaryd.config.models.header_problem`): here it
    catches values read from secret files, which the config never sees.

    Raises:
        ProviderError: a name or value holds a line break or is not Latin-1 (a secret
            file with one, say); the message names the header, never its value.
    """
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ProviderError(f"header {name.strip()!r}: {problem}; not sent")
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
