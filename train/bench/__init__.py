"""Benchmarks: scripts that print figures (tokens/s, memory, latency); not library modules."""
