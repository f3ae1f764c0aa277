"""Tests of inspector.config."""
