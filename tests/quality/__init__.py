"""Tests of inspector.quality."""
