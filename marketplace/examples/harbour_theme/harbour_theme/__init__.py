"""Harbour Capital's white-label theme for Alphintra (an example partner plugin)."""
