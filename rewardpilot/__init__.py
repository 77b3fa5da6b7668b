"""RewardPilot Stream: the best card for every transaction, as it happens."""

__version__ = "0.1.0"
ENGINE_VERSION = "rules-1"
