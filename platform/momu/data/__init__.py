"""Readers for source formats and the common record schema."""
