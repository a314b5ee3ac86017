"""kb: a local knowledge-base engine (index, query, ask)."""

__version__ = "0.1.0"
