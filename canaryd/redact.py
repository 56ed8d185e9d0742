"""Keeping secrets out of what canaryd writes: the one place that redacts (docs/reliability.md,
"Log lines").

- :func:`protect` and :func:`scrub`: every secret canaryd reads is protected, and every
  log line is scrubbed of protected values and of anything that looks like a credential
  (the log renderer in :mod:`canaryd.logs` calls :func:`scrub`).
- :func:`redact_url` and :func:`redact`: a URL cut to scheme, host and port, and a text
  (a library's message, a receiver's answer) with a URL's path and query and given secrets
  removed, for error messages about outgoing calls.
- :func:`scrub_sent`: an answer's body without the credentials just sent with the request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re

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
