"""Helpers shared by test packages: real engine processes."""
