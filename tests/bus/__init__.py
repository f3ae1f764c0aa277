"""Tests of inspector.bus."""
