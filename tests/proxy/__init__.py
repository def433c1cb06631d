"""Helpers for the reverse-proxy tests: an nginx runner and the app it proxies to."""
