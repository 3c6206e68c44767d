"""Datasets: the sources images are read from (folders, lists, tables, tar shards, HF)."""

from llavaguard.dataset.sources import SOURCES, Item, detect, read_source

__all__ = ["SOURCES", "Item", "detect", "read_source"]
