"""A simulated Singapore Exchange connector for Alphintra (an example partner plugin)."""
