"""The shared Redis client (redis.asyncio), opened in a listener and closed on shutdown."""

from __future__ import annotations

from redis.asyncio import Redis


def open_redis(url: str) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
