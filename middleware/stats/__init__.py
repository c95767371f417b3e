"""Numerical methods and summary SQL shared by baselines, the store and the checks."""
