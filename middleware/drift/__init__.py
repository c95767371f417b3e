"""The skew check: a window of the store compared with the baseline, on a schedule."""
