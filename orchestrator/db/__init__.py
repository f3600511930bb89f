"""The experiment database: every run of a store read in a bounded number of reads
(catalog), as one DuckDB table (frame, query), a sweep's live state (watch), garbage
collection, and the MLflow export.

Reads the store; starts no container and no run. Never imports the CLI.
"""
