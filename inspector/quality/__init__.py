"""Offline quality: scoring files, evaluating on labelled data, metrics and the report."""
