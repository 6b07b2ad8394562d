"""Benchmark suites (every method, several seeds, resumable) and the leaderboards rebuilt from their runs."""
