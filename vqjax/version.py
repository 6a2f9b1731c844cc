"""The library's version (layer 1: every layer may record it, e.g. in token-shard manifests)."""

__version__ = "0.1.0"
