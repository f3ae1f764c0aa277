"""Tests of inspector.cli."""
