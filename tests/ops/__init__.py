"""Tests of inspector.ops."""
