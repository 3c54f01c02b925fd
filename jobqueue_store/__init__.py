"""jobqueue-store: an asynchronous job-queue store with per-client publish/subscribe."""

__version__ = "0.1.0"

__all__ = ["__version__"]
