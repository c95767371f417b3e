"""Summaries: captured rows folded into per-minute rows that checks add up."""
