"""Helpers every wire protocol shares: flow control, sending files."""
