"""The one exception tree of canaryd.

::

    CanarydError                 base of everything canaryd raises on purpose
    ├── ConfigError              the configuration is invalid; carries every Problem found
    ├── TemplateError            a query template names an unknown variable or is malformed
    ├── ProviderError            a metrics provider failed (network, HTTP status, bad answer)
    │   └── ResourceError        canaryd itself ran out of something (file descriptors,
    │                            memory, its own connection queue): the check holds
    ├── TransportError           the providers' HTTP transport failed below HTTP; the provider
    │   │                        turns it into a ProviderError, so it never leaves the provider
    │   ├── TLSError             the TLS handshake failed
    │   ├── PoolTimeoutError     no connection came free in time
    │   ├── OutOfResourcesError  no file descriptor or memory to open a connection
    │   └── AnswerTimeoutError   no complete answer in time
    │       └── BusyLoopError    ... because canaryd's event loop was too busy to see it
    ├── RouterError              a traffic router did not apply (or confirm) the requested weights
    ├── WebhookError             an outgoing call failed (network, timeout, or a non-2xx
    │                            answer where the caller treats that as failure)
    ├── StoreError               the state store could not read or write
    │   └── FencedError          a write carried a stale lease epoch: another replica leads
    ├── SecretError              a secret (``*_file``, ``*_env``) cannot be read, is readable by
    │                            others, or is not set; each layer says which key or adapter
    │                            (also a ValueError, for code written before it)
    ├── CommandError             an operator command is not valid in the canary's current state
    │   └── NotFoundError        no canary with that namespace/name
    ├── ClientError              the CLI could not talk to the daemon or got an error answer
    ├── BadInputError            ``canaryd judge`` got input it cannot judge (one line for the user)
    └── DemoError                the demo could not set up or run a scenario

Not in the tree, on purpose: ``canaryd.core.judgestats.TiedObservationsError`` (a ValueError the
judge's own callers handle, never seen outside it) and private retry markers inside adapters.

Adapters translate library exceptions (``aiohttp.ClientError``, ``sqlite3.Error``,
``OSError``) into these with ``raise ... from exc``; nothing else leaks out of an adapter.
Messages are written for the operator and never contain a secret.
"""

from __future__ import annotations

from dataclasses import dataclass


class CanarydError(Exception):
    """Base class for every error canaryd raises deliberately."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem, located in its source file.

    Attributes:
        file: path of the file the problem is in ("<env>" for environment overrides).
        line: 1-based line, 0 when unknown.
        column: 1-based column, 0 when unknown.
        path: dotted key path, e.g. ``canaries[0].analysis.threshold``.
        message: what is wrong, for a human.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class ConfigError(CanarydError):
    """The configuration is invalid.

    Attributes:
        problems: every problem found, in file order.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(CanarydError):
    """A query template is malformed or names a variable that is not defined."""


class ProviderError(CanarydError):
    """A metrics provider failed to answer a query usefully."""


class ResourceError(ProviderError):
    """canaryd could not ask the provider because it ran out of a resource itself.

    File descriptors (``EMFILE``/``ENFILE``), memory (``ENOMEM``/``ENOBUFS``) or a free
    connection of its own pool: canaryd's trouble, not the provider's nor the canary's.
    A check that meets it holds (docs/reliability.md, "canaryd's own trouble").
    """


class RouterError(CanarydError):
    """A traffic router failed to apply or to confirm the requested weights."""


class WebhookError(CanarydError):
    """A webhook could not be called (connection refused, timeout, oversized answer)."""


class StoreError(CanarydError):
    """The state store failed to read or write."""


class FencedError(StoreError):
    """A write was refused: this replica's lease epoch is stale (see docs/ha.md)."""


class CommandError(CanarydError):
    """An operator command does not fit the canary's current state (HTTP 409)."""


class NotFoundError(CommandError):
    """No canary has the given namespace/name (HTTP 404)."""


class ClientError(CanarydError):
    """The command-line client could not reach the daemon or got an error answer."""


class SecretError(CanarydError, ValueError):
    """A secret cannot be read, is readable by others, or its variable is not set.

    The message names the file or variable, never the secret. Catch it as
    ``SecretError``; it is also a ``ValueError`` only so that code written before it
    (which caught the ``ValueError`` :func:`~canaryd.config.read_secret` raised) keeps working.
    """


class TransportError(CanarydError):
    """A request failed below HTTP: no connection, connection lost, broken answer.

    Raised by :mod:`canaryd.providers.transport`; the provider turns it into a
    :class:`ProviderError`, so it never leaves the provider.
    """


class TLSError(TransportError):
    """The TLS handshake failed (certificate not trusted, wrong host name, ...)."""


class PoolTimeoutError(TransportError):
    """No connection came free within the request's timeout."""


class AnswerTimeoutError(TransportError):
    """No complete answer within the request's timeout."""


class OutOfResourcesError(TransportError):
    """This process could not open a connection: out of file descriptors or memory."""


class BusyLoopError(AnswerTimeoutError):
    """Time ran out because canaryd's event loop was too busy, not the server too slow.

    The answer sat unread on the socket, or the timer fired well after its time: canaryd
    was not looking when it should have been (docs/reliability.md).
    """


class BadInputError(CanarydError):
    """The input cannot be judged; the message is the one line shown to the user."""


class DemoError(CanarydError):
    """The demo could not set up or run a scenario (the message says which part and why)."""
