"""Query templates: Flagger's Go-template subset, and the variables a query sees.

Rendering never executes code. :func:`render` supports the template language
Flagger's documents and examples use (docs/flagger.md, "Templates"): the
variables ``name``, ``namespace``, ``target``, ``service``, ``ingress``,
``route``, ``interval`` and ``variables.X`` (also spelled ``.name``),
``printf``, ``index variables "X"``, ``$x :=`` assignments, ``{{-``/``-}}``
trimming and comments. An unknown variable or an unclosed ``{{`` is a
:class:`~canaryd.errors.TemplateError`, never an empty string.

Built-in metrics (their queries and variables) live in :mod:`canaryd.config.meshqueries`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from canaryd.errors import TemplateError

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)?")


def render(template: str, variables: Mapping[str, str]) -> str:
    """Render a query template: Flagger's Go-template subset, without code execution.

    An action ``{{ ... }}`` (``{{-`` and ``-}}`` trim the whitespace beside
    it, ``{{/* ... */}}`` is a comment) holds one of:

    - a variable: ``name``, ``.name`` or ``variables.X`` (``X`` from the
      canary's or metric's ``variables``);
    - ``printf "FORMAT" ARG...`` (verbs ``%s``, ``%v``, ``%d``, ``%q``, ``%%``);
    - ``index variables "X"``;
    - a string literal, or ``$x`` of an earlier ``{{ $x := ... }}``.

    Args:
        template: the query text.
        variables: flat mapping of defined names (``variables.X`` keys included),
            as built by :func:`template_variables`.

    Returns:
        The query with every action replaced.

    Raises:
        TemplateError: an unclosed ``{{``, an action outside the subset, or an
            unknown variable (the message lists the defined ones).
    """
    out: list[str] = []
    local: dict[str, str] = {}
    pos = 0
    while (start := template.find("{{", pos)) >= 0:
        end = template.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' at {_where(template, start)}")
        text, inner = template[pos:start], template[start + 2 : end]
        pos = end + 2
        if inner.startswith("-") and inner[1:2].isspace():
            text, inner = text.rstrip(), inner[1:]
        if inner.endswith("-") and inner[-2:-1].isspace():
            inner = inner[:-1]
            pos = len(template) - len(template[pos:].lstrip())
        out.append(text)
        out.append(_action(inner, variables, local, _where(template, start)))
    out.append(template[pos:])
    return "".join(out)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|:=|\S+')
_VERB = re.compile(r"%[-+# 0-9.]*[a-zA-Z%]")


def _action(inner: str, variables: Mapping[str, str], local: dict[str, str], where: str) -> str:
    """The output of one action; an assignment stores its value and outputs nothing."""
    body = inner.strip()
    if body.startswith("/*") and body.endswith("*/"):
        return ""
    words = _TOKEN.findall(body)
    if len(words) >= 3 and words[1] == ":=" and re.fullmatch(r"\$\w+", words[0]):
        local[words[0]] = _call(words[2:], inner, variables, local, where)
        return ""
    return _call(words, inner, variables, local, where)


def _call(
    words: list[str],
    inner: str,
    variables: Mapping[str, str],
    local: dict[str, str],
    where: str,
) -> str:
    """Evaluate a command: one operand, ``printf`` or ``index variables "X"``."""
    if words and words[0] == "printf" and len(words) >= 2:
        args = [_operand(w, inner, variables, local, where) for w in words[1:]]
        return _printf(args[0], args[1:], where)
    if len(words) == 3 and words[0] == "index" and words[1] == "variables":
        key = _operand(words[2], inner, variables, local, where)
        return _lookup(f"variables.{key}", variables, where)
    if len(words) == 1:
        return _operand(words[0], inner, variables, local, where)
    raise TemplateError(
        f"{{{{{inner}}}}} at {where} is not supported; use a variable such as "
        "{{ target }} or {{ variables.X }}, printf or index (see docs/flagger.md)"
    )


def _operand(
    word: str, inner: str, variables: Mapping[str, str], local: dict[str, str], where: str
) -> str:
    """A string literal, a ``$local`` or a template variable."""
    if word.startswith("`") and word.endswith("`") and len(word) >= 2:
        return word[1:-1]
    if word.startswith('"') and word.endswith('"') and len(word) >= 2:
        return re.sub(r"\\(.)", r"\1", word[1:-1])
    if word.startswith("$"):
        if word not in local:
            raise TemplateError(f"undefined {word} at {where}")
        return local[word]
    name = word.removeprefix(".")
    if not _VARIABLE.fullmatch(name):
        raise TemplateError(
            f"{{{{{inner}}}}} at {where} is not a variable name; only "
            "{{ name }} and {{ variables.X }} placeholders are supported"
        )
    return _lookup(name, variables, where)


def _printf(fmt: str, args: list[str], where: str) -> str:
    """Go's ``printf`` for string arguments."""
    rest = iter(args)

    def verb(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%"
        value = next(rest, None)
        if value is None:
            return f"%!{match.group()[-1]}(MISSING)"
        return repr(value).replace("'", '"') if match.group().endswith("q") else value

    text = _VERB.sub(verb, fmt)
    if next(rest, None) is not None:
        raise TemplateError(f"printf at {where} has more arguments than verbs")
    return text


def _lookup(name: str, variables: Mapping[str, str], where: str) -> str:
    """The value of one variable."""
    if name not in variables:
        defined = ", ".join(sorted(variables)) or "none"
        raise TemplateError(f"unknown variable {name!r} at {where}; defined: {defined}")
    return variables[name]


def _where(text: str, index: int) -> str:
    """``line L, column C`` (1-based) of an index into ``text``."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def template_variables(
    *,
    namespace: str,
    name: str,
    target: str,
    interval: float,
    variables: Mapping[str, str] | None = None,
    service: str | None = None,
    ingress: str | None = None,
    route: str | None = None,
    provider_type: str = "prometheus",
) -> dict[str, str]:
    """Build the variables a query template can use.

    Args:
        namespace: the canary's namespace.
        name: the canary's name.
        target: what built-in queries select on (``CanaryConfig.target_name``).
        interval: the metric's interval in seconds, rendered as a duration of
            the query language of ``provider_type`` (:func:`interval_text`).
        variables: the canary's and metric's extra variables (``variables.X``).
        service: the ``service`` variable (default: ``target``, as in Flagger).
        ingress: the ``ingress`` variable (default: ``target``).
        route: the ``route`` variable (default: ``target``).
        provider_type: the type of the provider the query goes to.

    Returns:
        A flat mapping for :func:`render`.

    Raises:
        TemplateError: the interval is not a positive duration.
    """
    values = {
        "namespace": namespace,
        "name": name,
        "target": target,
        "service": service or target,
        "ingress": ingress or target,
        "route": route or target,
        "interval": interval_text(interval, provider_type),
    }
    values.update({f"variables.{k}": v for k, v in (variables or {}).items()})
    return values


def promql_duration(seconds: float) -> str:
    """Format seconds as a PromQL duration: ``60`` is ``1m``, ``90`` is ``1m30s``.

    Raises:
        TemplateError: the duration is not positive or is below one millisecond.
    """
    ms = round(seconds * 1000)
    if ms <= 0:
        raise TemplateError(f"interval must be at least 1ms, got {seconds:g}s")
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def interval_text(seconds: float, provider_type: str) -> str:
    """``{{ interval }}`` as the provider's query language writes a duration.

    PromQL's ``1m30s`` everywhere (``web`` included), except where the language
    cannot read it (docs/providers.md): Graphite writes minutes ``min``
    (``1min30s``; it reads ``1m`` as an error) and has no milliseconds (rounded
    up to a second); InfluxQL takes one unit only, so InfluxDB gets the largest
    unit that is exact (``90s``, ``1m``, ``500ms``), which Flux reads too.

    Raises:
        TemplateError: the duration is not positive or is below one millisecond.
    """
    text = promql_duration(seconds)
    if provider_type == "graphite":
        whole = promql_duration(max(1, math.ceil(seconds)))
        return re.sub(r"(\d+)m(?!s)", r"\1min", whole)
    if provider_type == "influxdb":
        ms = round(seconds * 1000)
        for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if ms % size == 0:
                return f"{ms // size}{unit}"
        return f"{ms}ms"
    return text
