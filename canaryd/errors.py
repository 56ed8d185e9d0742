"""The one exception tree of canaryd.

::

    CanarydError                 base of everything canaryd raises on purpose
    ├── ConfigError              the configuration is invalid; carries every Problem found
    ├── TemplateError            a query template names an unknown variable or is malformed
    ├── ProviderError            a metrics provider failed (network, HTTP status, bad answer)
    │   └── ResourceError        canaryd itself ran out of something (file descriptors,
    │                            memory, its own connection queue): the check holds
    ├── RouterError              a traffic router did not apply (or confirm) the requested weights
    ├── WebhookError             an outgoing call failed (network, timeout, or a non-2xx
    │                            answer where the caller treats that as failure)
    ├── StoreError               the state store could not read or write
    ├── CommandError             an operator command is not valid in the canary's current state
    │   └── NotFoundError        no canary with that namespace/name
    └── ClientError              the CLI could not talk to the daemon or got an error answer

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


class CommandError(CanarydError):
    """An operator command does not fit the canary's current state (HTTP 409)."""


class NotFoundError(CommandError):
    """No canary has the given namespace/name (HTTP 404)."""


class ClientError(CanarydError):
    """The command-line client could not reach the daemon or got an error answer."""
