"""Keeping secrets out of what canaryd writes: the one place that redacts (docs/reliability.md,
"Log lines").

- :func:`protect` and :func:`scrub`: every secret canaryd reads is protected, and every
  log line is scrubbed of protected values and of anything that looks like a credential
  (the log renderer in :mod:`canaryd.logs` calls :func:`scrub`).
- :func:`redact_url` and :func:`redact`: a URL cut to scheme, host and port, and a text
  (a library's message, a receiver's answer) with a URL's path and query and given secrets
  removed, for error messages about outgoing calls.
- :func:`redact_dsn`: a database address (a PostgreSQL URL or key=value string, a SQLite
  URL) with its passwords removed and the rest kept, for messages, logs and result files.
  An HTTP URL loses its path too (:func:`redact_url`: a webhook's path may be its token);
  a database's path is its name, which an operator needs to see.
- :func:`scrub_dsn`: a database library's message without the passwords of the address
  it was given (libpq repeats an address it cannot parse).
- :func:`scrub_sent`: an answer's body without the credentials just sent with the request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from urllib.parse import unquote

from pydantic import SecretStr

_SECRETS: dict[str, None] = {}
"""Secret values canaryd has read (an ordered set, newest last), scrubbed from every line."""

MAX_SECRETS = 256
"""Spellings remembered at most: a secret and its JSON-escaped spelling, if another (rotation
adds new values; the oldest are forgotten)."""

MIN_SECRET_CHARS = 6
"""Shorter values are not scrubbed by value (they would blank ordinary words)."""

_CREDENTIALS = (
    # a header's value, to the end of the line or quote: Authorization: Bearer x\x01y
    re.compile(
        r"(?i)(?P<keep>\b(?:proxy-authorization|authorization|set-cookie|cookie|x-api-key)"
        r"['\"]?\s*[:=]\s*['\"]?)[^'\"\n]+"
    ),
    re.compile(r"(?i)(?P<keep>\b(?:bearer|basic)\s+)[^\s'\",;]+"),  # Bearer x, Basic x
    re.compile(r"(?i)(?P<keep>\b[a-z][a-z0-9+.-]*://)[^/\s@'\"]+@"),  # https://user:pass@
)
"""What looks like a credential: the part after ``keep`` is replaced."""

REDACTED = "***"


def protect(secret: str) -> None:
    """Scrub ``secret`` from every log line from now on (docs/reliability.md)."""
    if len(secret) < MIN_SECRET_CHARS or secret in _SECRETS:
        return
    _SECRETS[secret] = None
    # a log line's fast path scrubs its JSON text, where a quote, a backslash, a control
    # or non-ASCII character of the secret is escaped: scrub that spelling too
    _SECRETS[json.dumps(secret)[1:-1]] = None
    while len(_SECRETS) > MAX_SECRETS:
        del _SECRETS[next(iter(_SECRETS))]


def scrub(text: str) -> str:
    """``text`` with protected secrets and credential-looking values replaced by ``***``."""
    for secret in tuple(_SECRETS):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _CREDENTIALS:
        text = pattern.sub(_keep_redacted, text)
    return text


def scrub_protected(text: str) -> str:
    """``text`` with protected secrets replaced, credential-looking values left (a fast path)."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _keep_redacted(match: re.Match[str]) -> str:
    return match["keep"] + REDACTED + ("@" if match[0].endswith("@") else "")


def redact_url(url: str) -> str:
    """Keep scheme, host and port of a URL; drop the path and query (may hold tokens)."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}/…" if sep else "<url>"


_URL_SECRET = re.compile(r"(?i)(?P<keep>[?&][^=&]*(?:pass|secret|token)[^=&]*=)[^&]*")
"""A URL parameter naming a password or its file (``password``, ``sslpassword``,
``passfile``): its value is hidden."""

_CONNINFO_PAIR = re.compile(
    r"(?P<key>[\w.-]+)\s*=\s*(?P<value>'(?:\\.|[^'\\])*'?|(?:\\.|[^\s\\])*)"
)
"""``key = value`` in a libpq key=value string (a value quoted with ``'``, or up to a blank)."""

_CONNINFO_SECRET = re.compile(r"(?i)pass|secret|token")


def redact_dsn(dsn: str) -> str:
    """A database address fit to show: user, host, port and database kept, passwords gone.

    Both forms libpq reads: a URL (``postgresql://user:pw@host:5432/db?sslmode=require``)
    loses the password of its user part and the values of parameters that name a
    password or its file (``password``, ``sslpassword``, ``passfile``); a key=value
    string (``host=db user=u password='x y'``) loses the same values. The user part
    ends at the last ``@``, so a password holding an unescaped ``@``, ``/`` or ``?``
    is hidden too (at worst, more than the password is).
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return _CONNINFO_PAIR.sub(_hide_pair, dsn)
    user, at, place = _URL_SECRET.sub(rf"\g<keep>{REDACTED}", rest).rpartition("@")
    name = user.partition(":")[0]
    return f"{scheme}://{name}@{place}" if at and name else f"{scheme}://{place}"


def scrub_dsn(text: str, dsn: str) -> str:
    """``text`` (a database library's message) without the passwords of ``dsn``.

    libpq repeats a part of the address it cannot parse (``invalid percent-encoded
    token: "<password>"``), so a message about a bad address may hold its password.
    """
    text = text.replace(dsn, redact_dsn(dsn)) if dsn else text
    for secret in dsn_passwords(dsn):
        if len(secret) >= 3:  # shorter would blank ordinary letters
            text = text.replace(secret, REDACTED)
    return text


def dsn_passwords(dsn: str) -> list[str]:
    """The passwords a database address holds (as written, and decoded), longest first."""
    _, sep, rest = dsn.partition("://")
    if sep:
        found = [rest.rpartition("@")[0].partition(":")[2]]
        found += [m[0].partition("=")[2] for m in _URL_SECRET.finditer(rest)]
    else:
        found = [m["value"] for m in _CONNINFO_PAIR.finditer(dsn) if _hidden(m["key"])]
    found += [unquote(s) for s in found] + [s.strip("'") for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _hidden(key: str) -> bool:
    return _CONNINFO_SECRET.search(key) is not None


def _hide_pair(match: re.Match[str]) -> str:
    key = match["key"]
    return f"{key}={REDACTED}" if _hidden(key) else match[0]


def redact(text: str, url: str | None, *secrets: SecretStr | None) -> str:
    """Remove a URL's path and query, and secret values, from text that may echo them.

    A receiver's answer or a library's message can repeat the URL it was sent
    to; a chat webhook's path is its token and a signed URL's query its signature.
    """
    if url:
        text = text.replace(url, redact_url(url))
        tail = url.partition("://")[2].partition("/")[2]
        path, _, query = tail.partition("?")
        for part in (tail, path, query):
            if len(part) >= 8:  # short paths ("/", "/hook") hold no token and would over-match
                text = text.replace(part, "…")
    for secret in secrets:
        value = secret.get_secret_value() if secret is not None else ""
        if len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text


def scrub_sent(body: bytes, headers: dict[str, str], secret: frozenset[str] = frozenset()) -> bytes:
    """The body without the credentials just sent: a proxy's error page may echo them.

    Removed: the ``Authorization`` value, with and without its scheme, a
    basic-auth pair decoded, and the values of the headers named in ``secret``
    (lower case; those read from secret files). Done on the whole body, before
    any preview is cut from it, so that no part of a secret survives at the cut.
    """
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    found = [value, *(v for k, v in headers.items() if k.lower() in secret)]
    if scheme == "Basic":
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            pair = base64.b64decode(value, validate=True).decode()
            found += [pair, pair.partition(":")[2]]
    for item in sorted(found, key=len, reverse=True):
        if len(item) >= 4:
            body = body.replace(item.encode(), REDACTED.encode())
    return body
