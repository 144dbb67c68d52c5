"""The analytics side: Parquet snapshots of the worker's state, DuckDB views."""
