"""Tenants, their users and API keys."""
