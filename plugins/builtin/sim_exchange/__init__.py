"""The built-in simulated venue: a price-time-priority order book (`book`), its matching
engine (`matching`), and the exchange connector over every MIC of the venue directory
(`connector`), registered as a plugin by `plugin`."""
