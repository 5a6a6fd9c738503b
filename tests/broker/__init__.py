"""Brokered calls: rules, the call engine, and the attacks on it."""
