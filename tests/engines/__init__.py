"""Tests of the engine OpenAPI documents in specs/engines/ against real engine data."""
