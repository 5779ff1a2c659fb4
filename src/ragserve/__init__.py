"""ragserve: retrieval-augmented generation as a service."""

__version__ = "0.1.0"
