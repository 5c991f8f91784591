"""Readers and writers for the dataset layouts, and the canonical tables."""
