"""Pre-trade compliance: which jurisdictions an order is under (jurisdictions.py), and the
engine that runs every applicable rule pack and answers a Decision (engine.py). The rule
packs themselves are plugins (plugins/builtin/compliance for the built-in ones)."""
