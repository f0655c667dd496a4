"""Gradient health: watch every layer while training, and say what went wrong, where and why."""
