"""Helpers of the fault tests: servers, worker processes and a test app."""
