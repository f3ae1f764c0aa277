"""Tests of inspector.model."""
