"""Statistics for ``hwcaps-fs compare``, standard library only.

Timings of one program are skewed and heavy-tailed (a run that meets a page fault storm or a
preemption is much slower, never much faster), so nothing here assumes a normal distribution:

* a sample is summarised by its median and quartiles;
* how much faster one build is than another is the Hodges-Lehmann estimate of the shift
  between the two samples of *log* times, turned back into a ratio: the median of all
  ``reference_i / candidate_j``. Its confidence interval is the distribution-free one that
  goes with the Mann-Whitney test (ranks of the pairwise differences, normal approximation of
  the U statistic), so "1.42× (1.38–1.46)" means what it says for any distribution shape.

Pure: numbers in, numbers out.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """A sample's median, quartiles and extremes."""

    n: int
    median: float
    q1: float
    q3: float
    low: float
    high: float


def summarize(values: Sequence[float]) -> Summary:
    """The :class:`Summary` of a non-empty sample."""
    ordered = sorted(values)
    if len(ordered) < 2:
        value = ordered[0]
        return Summary(1, value, value, value, value, value)
    q1, median, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Summary(len(ordered), median, q1, q3, ordered[0], ordered[-1])


@dataclass(frozen=True)
class Ratio:
    """How many times faster the candidate is than the reference (``estimate`` > 1: faster),
    with the bounds of its confidence interval (``low`` may be 0 and ``high`` infinite when
    the samples are too small for the confidence asked)."""

    estimate: float
    low: float
    high: float


#: Samples larger than this are thinned to this many evenly spaced order statistics before
#: the n×m pairwise differences are formed (the interval only gets a little wider).
MAX_SAMPLE = 400


def _thinned(values: Sequence[float]) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= MAX_SAMPLE:
        return ordered
    step = (len(ordered) - 1) / (MAX_SAMPLE - 1)
    return [ordered[round(i * step)] for i in range(MAX_SAMPLE)]


def speedup(reference: Sequence[float], candidate: Sequence[float],
            confidence: float = 0.95) -> Ratio:
    """The Hodges-Lehmann speed-up of ``candidate`` over ``reference`` (positive times)."""
    reference, candidate = _thinned(reference), _thinned(candidate)
    diffs = sorted(math.log(r) - math.log(c) for r in reference for c in candidate)
    n, m = len(reference), len(candidate)
    estimate = math.exp(statistics.median(diffs))
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    # The k-th smallest and k-th largest pairwise differences bound the interval, k the lower
    # critical value of U (normal approximation; ties only make it slightly conservative).
    k = math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))
    if k < 1:
        return Ratio(estimate, 0.0, math.inf)
    return Ratio(estimate, math.exp(diffs[k - 1]), math.exp(diffs[len(diffs) - k]))


class Verdict(enum.Enum):
    """What a :class:`Ratio` says, given how close to 1 counts as "the same"."""

    FASTER = "faster"
    SLOWER = "slower"
    SAME = "same"
    UNCLEAR = "unclear"


def verdict(ratio: Ratio, tolerance: float) -> Verdict:
    """SAME when the whole interval lies within ``1 ± tolerance`` (as a ratio: between
    1/(1+t) and 1+t; a real but negligible difference is "the same"), else FASTER or SLOWER
    when the whole interval is on one side of 1, else UNCLEAR (measure more)."""
    if ratio.low >= 1.0 / (1.0 + tolerance) and ratio.high <= 1.0 + tolerance:
        return Verdict.SAME
    if ratio.low > 1.0:
        return Verdict.FASTER
    if ratio.high < 1.0:
        return Verdict.SLOWER
    return Verdict.UNCLEAR
