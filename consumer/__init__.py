"""The consumer pool: consumer groups, micro-batches, shared rate limit, dead letters.

``ConsumerPool``, ``ConsumerSettings``, ``InvalidSettingsError`` and ``PoolStats`` are imported lazily,
so that ``consumer.errors`` and the rate limiter load without the engine.
"""

__all__ = ["ConsumerPool", "ConsumerSettings", "InvalidSettingsError", "PoolStats"]


def __getattr__(name: str):
    if name == "ConsumerPool":
        from consumer.pool import ConsumerPool

        return ConsumerPool
    if name == "ConsumerSettings":
        from consumer.settings import ConsumerSettings

        return ConsumerSettings
    if name == "InvalidSettingsError":
        from consumer.settings import InvalidSettingsError

        return InvalidSettingsError
    if name == "PoolStats":
        from consumer.stats import PoolStats

        return PoolStats
    raise AttributeError(f"module 'consumer' has no attribute {name!r}")
