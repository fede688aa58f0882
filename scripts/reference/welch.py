#!/usr/bin/env python3
"""Reference values for lem's Welch t-test (common/src/welch.rs tests and
coordinator/tests/cli_compare.rs), from an independent implementation: scipy.

    pip install scipy && python3 scripts/reference/welch.py

For each sample pair prints B - A, Welch's t, the Welch-Satterthwaite df, the two-sided
p-value and the 95% CI of B - A, as scipy.stats.ttest_ind(b, a, equal_var=False) gives them.
"""
import scipy
from scipy import stats

# (name, A, B): the same samples as the Rust tests.
PAIRS = [
    ("clear", [10.1, 9.8, 10.4, 10.0, 9.9], [10.9, 11.3, 10.7, 11.1]),
    ("overlapping", [5.0, 7.0, 6.0], [6.5, 5.5, 8.0, 4.5]),
    ("two_each", [1.0, 3.0], [2.0, 6.0]),
]

print(f"# scipy {scipy.__version__}")
for name, a, b in PAIRS:
    r = stats.ttest_ind(b, a, equal_var=False)
    ci = r.confidence_interval(0.95)
    diff = sum(b) / len(b) - sum(a) / len(a)
    print(
        f"{name}: diff={diff!r} t={float(r.statistic)!r} df={float(r.df)!r} "
        f"p={float(r.pvalue)!r} ci95=({float(ci.low)!r}, {float(ci.high)!r})"
    )
