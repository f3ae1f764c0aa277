"""Tests of inspector.daemon."""
