"""The store contract suite, run against every backend."""
