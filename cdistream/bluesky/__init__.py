"""Bluesky integration: consume cdistream's documents with Bluesky's own tools."""

from .consumer import RemoteConsumer

__all__ = ["RemoteConsumer"]
