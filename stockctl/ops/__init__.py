"""Operator tools over the library: diagnostics, the live top view, the load test."""
