"""Tests of inspector.core."""
