"""Recommenders: what the consumer pool calls to turn transactions into recommendations."""

from consumer.recommenders.base import ItemError, Recommender, WorkItem
from consumer.recommenders.in_process import InProcessRecommender

__all__ = ["ItemError", "InProcessRecommender", "Recommender", "WorkItem"]
