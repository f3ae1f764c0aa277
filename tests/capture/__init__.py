"""Tests of inspector.capture."""
