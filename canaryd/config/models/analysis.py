"""Analysis models: metric templates and metrics, the judge, webhooks, ``analysis:``.

One canary's ``analysis:`` block, pasted from a Flagger ``Canary`` (docs/flagger.md).
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from canaryd.config.models.base import (
    DEFAULT_HTTP_TIMEOUT,
    Finite,
    HttpUrl,
    Interval,
    Model,
    Name,
    Timeout,
)
from canaryd.core.judgeinput import MetricSettings, ThresholdsInput


class Template(Model):
    """A metric template (Flagger's MetricTemplate): a query for one provider.

    ``namespace`` (set for MetricTemplate manifests) makes ``templateRef``
    lookups namespaced, as in Flagger; a template without one matches any.
    """

    provider: Name
    query: str
    namespace: str | None = None


class ThresholdRange(Model):
    """Inclusive bounds a metric value must stay within to pass."""

    min: Finite | None = None
    max: Finite | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class TemplateRef(Model):
    """Reference to an entry of ``templates`` (``namespace`` kept for Flagger manifests)."""

    name: Name
    namespace: str | None = None


class OnNoData(StrEnum):
    """What a metric without data does to the check."""

    FAIL = "fail"
    PASS = "pass"
    HOLD = "hold"


class CompareSpec(MetricSettings):
    """Judge this metric by comparing the canary with the primary (Mann-Whitney).

    The judge keys are those of ``canaryd judge`` (direction, tolerance, ...);
    ``lookback``/``step`` shape the range query run for each side. By default
    the metric's query is rendered once with ``target`` = the canary and once
    with ``target`` = the primary; ``primaryQuery``/``canaryQuery`` override that.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    lookback: Interval = 300.0
    step: Interval = 10.0
    primaryQuery: str | None = None
    canaryQuery: str | None = None


class OnMarginal(StrEnum):
    """What a Marginal statistical judgement does to the check."""

    HOLD = "hold"
    FAIL = "fail"
    PASS = "pass"


class JudgeSpec(Model):
    """How the compare metrics of one tick are scored together."""

    thresholds: ThresholdsInput = Field(default_factory=ThresholdsInput)
    groupWeights: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=dict)
    onMarginal: OnMarginal = OnMarginal.HOLD

    @field_validator("groupWeights")
    @classmethod
    def _weights_fit(cls, weights: dict[str, float]) -> dict[str, float]:
        """All configured weights count against 100 (Kayenta's scoring, docs/judge.md)."""
        total = sum(weights.values())
        if total > 100.0:
            raise ValueError(f"groupWeights add up to {total:g}, more than 100")
        return weights


class MetricSpec(Model):
    """One metric check of an analysis (Flagger's ``analysis.metrics[]``).

    With ``compare`` the metric is judged against the primary instead of
    ``thresholdRange``.
    """

    name: Name
    threshold: Finite | None = None
    thresholdRange: ThresholdRange | None = None
    templateRef: TemplateRef | None = None
    query: str | None = None
    provider: Name | None = None
    interval: Interval = 60.0
    onNoData: OnNoData = OnNoData.FAIL
    templateVariables: dict[str, str] = Field(default_factory=dict)
    compare: CompareSpec | None = None
    dryRun: bool = False
    """Judged, recorded and shown, but never fails or holds a check (docs/flagger.md)."""

    @model_validator(mode="after")
    def _deprecated_threshold(self) -> MetricSpec:
        """Flagger's deprecated ``threshold``, read as Flagger reads it (docs/flagger.md).

        Without ``thresholdRange`` it is the minimum of ``request-success-rate``
        and the maximum of every other metric; with one it is ignored.
        """
        if self.threshold is None or self.thresholdRange is not None:
            return self
        bound = "min" if self.name == "request-success-rate" else "max"
        derived = ThresholdRange.model_validate({bound: self.threshold})
        object.__setattr__(self, "thresholdRange", derived)
        return self

    @model_validator(mode="after")
    def _source(self) -> MetricSpec:
        if self.templateRef is not None and self.query is not None:
            raise ValueError("set templateRef or query, not both")
        if self.compare is not None:
            if self.dryRun:
                raise ValueError("dryRun applies to thresholdRange metrics, not compare")
            return self
        if self.thresholdRange is None or (
            self.thresholdRange.min is None and self.thresholdRange.max is None
        ):
            raise ValueError("thresholdRange needs min, max or both (or the deprecated threshold)")
        return self


class WebhookType(StrEnum):
    """Flagger's webhook types; the ``confirm-*`` ones are gates."""

    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"
    EVENT = "event"


GATE_TYPES = frozenset(
    {
        WebhookType.CONFIRM_ROLLOUT,
        WebhookType.CONFIRM_TRAFFIC_INCREASE,
        WebhookType.CONFIRM_PROMOTION,
    }
)


class WebhookSpec(Model):
    """One webhook of an analysis.

    ``timeout`` is the HTTP timeout of one call, as in Flagger, and is honoured
    even when it is longer than the tick's observation budget (the tick then
    waits for the hook; docs/flagger.md). ``gateTimeout`` (gates only) is how
    long a gate may stay closed before the rollout fails. A gate without
    ``url`` is a manual gate opened by ``canaryd approve``. ``muteAlert``
    (gates) keeps the "waiting for approval" alert of this hook off the chat
    channels; ``disableTLS`` skips certificate verification for this hook.
    """

    name: Name
    type: WebhookType = WebhookType.ROLLOUT
    url: HttpUrl | None = None
    timeout: Timeout = DEFAULT_HTTP_TIMEOUT
    gateTimeout: Timeout | None = None
    retries: int = Field(default=0, ge=0, le=10)
    metadata: dict[str, str] = Field(default_factory=dict)
    secret_file: str | None = None
    secret_env: str | None = None
    muteAlert: bool = False
    disableTLS: bool = False

    @model_validator(mode="after")
    def _gate_fields(self) -> WebhookSpec:
        if self.type not in GATE_TYPES:
            if self.url is None:
                raise ValueError(f"a {self.type.value} webhook needs a url")
            if self.gateTimeout is not None:
                raise ValueError("gateTimeout applies to confirm-* gates only")
        return self


class Analysis(Model):
    """Flagger's ``spec.analysis`` plus canaryd's extensions."""

    interval: Interval = 60.0
    threshold: int = Field(default=1, ge=0)
    maxWeight: int | None = Field(default=None, ge=1, le=100)
    stepWeight: int | None = Field(default=None, ge=1, le=100)
    stepWeights: list[Annotated[int, Field(ge=1, le=100)]] | None = None
    stepWeightPromotion: int | None = Field(default=None, ge=1, le=100)
    iterations: int = Field(default=0, ge=0)
    match: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[MetricSpec] = Field(default_factory=list)
    webhooks: list[WebhookSpec] = Field(default_factory=list)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)

    @field_validator("threshold")
    @classmethod
    def _flagger_threshold(cls, v: int) -> int:
        """Unset or 0 means 1, as Flagger's ``GetAnalysisThreshold`` (docs/flagger.md)."""
        return v or 1

    @field_validator("stepWeights")
    @classmethod
    def _increasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("must not be empty")
            for a, b in itertools.pairwise(v):
                if b <= a:
                    raise ValueError(f"must be strictly increasing ({a} then {b})")
        return v

    @model_validator(mode="after")
    def _strategy(self) -> Analysis:
        if self.iterations == 0 and self.stepWeight is None and self.stepWeights is None:
            raise ValueError(
                "set stepWeight or stepWeights (canary), or iterations (blue/green, A/B)"
            )
        if self.match and self.iterations == 0:
            raise ValueError("match (A/B testing) needs iterations > 0")
        names = [m.name for m in self.metrics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"metric names must be unique: {', '.join(dup)}")
        hooks = [w.name for w in self.webhooks]
        dup = sorted({n for n in hooks if hooks.count(n) > 1})
        if dup:
            raise ValueError(f"webhook names must be unique: {', '.join(dup)}")
        return self

    @property
    def strategy(self) -> Literal["canary", "blue-green", "ab"]:
        """Which strategy Flagger would pick for these keys."""
        if self.iterations > 0:
            return "ab" if self.match else "blue-green"
        return "canary"

    @property
    def weight_notes(self) -> list[str]:
        """Where the weight keys do not mean what they say, as Flagger reads them."""
        notes = []
        if self.stepWeight is not None and self.stepWeights is not None:
            notes.append(
                f"stepWeight and stepWeights are both set: steps of {self.stepWeight}% "
                f"up to {self.stepWeights[-1]}% (the last of stepWeights), as in Flagger"
            )
        if self.stepWeights and self.maxWeight not in (None, self.stepWeights[-1]):
            notes.append(
                f"maxWeight {self.maxWeight} is ignored: stepWeights go up to "
                f"{self.stepWeights[-1]}%, as in Flagger"
            )
        return notes

    @property
    def weight_differences(self) -> list[str]:
        """Where canaryd's weights deliberately differ from Flagger's (docs/flagger.md)."""
        weights = self.weights
        if not self.stepWeight or not weights:
            return []
        flagger = min(100, -(-weights[-1] // self.stepWeight) * self.stepWeight)
        if flagger == weights[-1]:
            return []
        return [
            f"the last step stops at {weights[-1]}% where Flagger would overshoot to "
            f"{flagger}% (stepWeight {self.stepWeight})"
        ]

    @property
    def weights(self) -> list[int]:
        """The canary weights to walk through, ending at the effective maxWeight.

        As in Flagger, ``stepWeights`` win over ``maxWeight`` (their last entry is
        the maximum), and ``stepWeight`` with ``stepWeights`` takes steps of
        ``stepWeight`` up to that maximum. Unlike Flagger, the last step stops at
        the maximum instead of overshooting it (docs/flagger.md).
        """
        if self.stepWeights and not self.stepWeight:
            return list(self.stepWeights)
        step = self.stepWeight or 0
        cap = self.stepWeights[-1] if self.stepWeights else (self.maxWeight or 100)
        if not step:
            return []
        weights = list(range(step, cap + 1, step))
        return weights if weights and weights[-1] == cap else [*weights, cap]
