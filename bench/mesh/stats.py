"""Number parsing and the mean [min..max] formatting shared by the bench summaries."""

import math


def num(x):
    """`x` as a float; NaN when it is missing, not a number or not finite."""
    try:
        v = float(x)
        return v if math.isfinite(v) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def agg(vals, fmt="{:.3f}"):
    """Mean [min..max] of the numbers among `vals`; `n/a` when there are none."""
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "n/a"
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} [{fmt.format(min(vals))}..{fmt.format(max(vals))}]"
