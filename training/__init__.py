"""MotionMix's offline pipeline: recorded sessions and real-data folders → a reproducible,
paired audio+pose dataset (`python -m training`, docs/training.md). It never imports the live
runtime."""

from training.loader import Dataset, Window, load

__all__ = ["Dataset", "Window", "load"]
