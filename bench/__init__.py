"""Benchmarks: the store against a bare aiohttp JSON handler, measured in the same run."""
