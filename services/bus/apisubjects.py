"""The subjects of NATS's own APIs (``$KV.``, ``$JS.API.``), built in one place.

JetStream keeps a KV bucket ``b`` in the stream ``KV_b`` under ``$KV.b.<key>``; its API
listens on ``$JS.API.<verb>.<stream>``. Code that publishes or asks on those subjects
directly (the batched lookups, the marker puts, the purges) takes them from here.
"""

from __future__ import annotations


def kv_stream(bucket: str) -> str:
    """The stream that holds KV bucket ``bucket``."""
    return f"KV_{bucket}"


def kv_prefix(bucket: str) -> str:
    """``$KV.<bucket>.``: a key's subject is this followed by the key."""
    return f"$KV.{bucket}."


def kv_subject(bucket: str, key: str) -> str:
    """The subject of ``key`` in ``bucket`` (a put is a publish on it)."""
    return f"$KV.{bucket}.{key}"


def kv_all(bucket: str) -> str:
    """The wildcard over every key of ``bucket``."""
    return f"$KV.{bucket}.>"


def direct_get(stream: str) -> str:
    """The direct get API of ``stream`` (batched and ``multi_last`` reads)."""
    return f"$JS.API.DIRECT.GET.{stream}"


def stream_purge(stream: str) -> str:
    """The purge API of ``stream``."""
    return f"$JS.API.STREAM.PURGE.{stream}"
