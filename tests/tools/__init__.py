"""Tests of the tools/ scripts (benchmarks run small and for real)."""
