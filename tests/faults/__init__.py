"""Helpers of the fault-injection suite: drive the real CLI in a subprocess and watch its files."""
