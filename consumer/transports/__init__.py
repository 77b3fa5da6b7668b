"""Transports: where a consumer pool gets its micro-batches and how it settles them."""

from consumer.transports.base import Delivery, Reclaimed, Transport, TransportError
from consumer.transports.redis_stream import RedisStreamTransport

__all__ = ["Delivery", "Reclaimed", "RedisStreamTransport", "Transport", "TransportError"]
