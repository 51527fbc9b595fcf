"""Helpers of the fault-injection suite (issue 7): drive the real CLI in a subprocess and watch its files."""
