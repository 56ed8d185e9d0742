"""The ``canaryd judge`` input document and the judge settings of compare metrics.

Pydantic models only: importing this module (as the configuration does) does not
import numpy, which only :mod:`canaryd.core.judge` needs (``docs/judge.md``, start-up cost).
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from canaryd.core.judgemodel import (
    Direction,
    EffectSize,
    MetricConfig,
    MetricPair,
    NanStrategy,
    Outliers,
    OutlierStrategy,
)

Value = Annotated[float, Strict()] | None
"""A series value: a JSON number, or ``null`` / ``NaN`` for a missing one."""
Threshold = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Model(BaseModel):
    """Unknown keys are errors; numbers are JSON numbers, not strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OutliersSettings(_Model):
    """``outliers``: whether to drop values outside the IQR fences."""

    strategy: OutlierStrategy = OutlierStrategy.KEEP
    factor: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 3.0


class MetricSettings(_Model):
    """How one metric is judged; the keys of a ``metrics`` entry besides name and series.

    Reusable for compare metrics in the daemon's configuration.
    """

    direction: Direction = Direction.EITHER
    nanStrategy: NanStrategy = NanStrategy.REMOVE
    outliers: OutliersSettings = OutliersSettings()
    effectSize: EffectSize = EffectSize.MEAN_RATIO
    allowedIncrease: Threshold | None = None
    allowedDecrease: Threshold | None = None
    criticalIncrease: Threshold | None = None
    criticalDecrease: Threshold | None = None
    critical: bool = False
    mustHaveData: bool = False
    tolerance: Threshold = 0.25
    confidence: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.98
    groups: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = ["default"]

    def to_config(self, name: str) -> MetricConfig:
        """The judge's config for metric ``name``."""
        return MetricConfig(
            name=name,
            direction=self.direction,
            nan_strategy=self.nanStrategy,
            outliers=Outliers(self.outliers.strategy, self.outliers.factor),
            effect_size=self.effectSize,
            allowed_increase=self.allowedIncrease,
            allowed_decrease=self.allowedDecrease,
            critical_increase=self.criticalIncrease,
            critical_decrease=self.criticalDecrease,
            critical=self.critical,
            must_have_data=self.mustHaveData,
            tolerance=self.tolerance,
            confidence=self.confidence,
            groups=tuple(dict.fromkeys(self.groups)),
        )


class MetricInput(MetricSettings):
    """One ``metrics`` entry: name, both series, and the settings."""

    name: Annotated[str, Field(min_length=1)]
    control: list[Value]
    experiment: list[Value]

    def to_pair(self) -> MetricPair:
        """The judge's input for this metric (``null`` becomes NaN)."""
        return MetricPair(
            config=self.to_config(self.name),
            control=[math.nan if v is None else v for v in self.control],
            experiment=[math.nan if v is None else v for v in self.experiment],
        )


class ThresholdsInput(_Model):
    """``thresholds``: the scores at or above which the canary passes or is marginal."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    passing: Annotated[float, Field(alias="pass", ge=0.0, le=100.0)] = 95.0
    marginal: Annotated[float, Field(ge=0.0, le=100.0)] = 75.0

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdsInput:
        if self.marginal > self.passing:
            raise ValueError(
                f"marginal ({self.marginal:g}) must not be above pass ({self.passing:g})"
            )
        return self


class JudgeInput(_Model):
    """The whole ``canaryd judge`` input document."""

    metrics: Annotated[list[MetricInput], Field(min_length=1)]
    groupWeights: dict[str, Annotated[float, Field(ge=0.0, le=100.0)]] = {}
    thresholds: ThresholdsInput = ThresholdsInput()

    @model_validator(mode="after")
    def _consistent(self) -> JudgeInput:
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique, repeated: {', '.join(duplicates)}")
        groups = {g for m in self.metrics for g in m.groups}
        total = sum(self.groupWeights.values())
        if total > 100.0:
            raise ValueError(f"groupWeights add up to {total:g}, more than 100")
        weighted = sum(w for g, w in self.groupWeights.items() if g in groups)
        if groups <= self.groupWeights.keys() and not math.isclose(weighted, 100.0):
            raise ValueError(f"groupWeights weigh every group but add up to {weighted:g}, not 100")
        return self
