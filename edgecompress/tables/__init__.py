"""Latency tables for an experiment: which kernels its space produces, measuring them, and
predicting, validating and screening with the result."""
