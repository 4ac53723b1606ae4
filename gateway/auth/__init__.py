"""Who is calling (API keys, JWT) and what they may do (casbin, domains = tenants)."""
