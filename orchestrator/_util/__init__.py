"""Small utilities every layer may use: identifier shapes, canonical bytes, safe
files, git, a thread pool, the Ctrl-C policy.

Imports nothing of orch but :mod:`orchestrator.errors`.
"""
