"""The engine: the parts put together, its periodic jobs and its Prometheus figures."""
