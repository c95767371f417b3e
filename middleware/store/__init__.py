"""The DuckDB log store: its schema, the writer thread and the columns it writes."""
