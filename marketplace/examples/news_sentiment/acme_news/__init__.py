"""Acme Data's news-sentiment feed for Alphintra (an example vendor plugin)."""
