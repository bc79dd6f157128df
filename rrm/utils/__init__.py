"""Helpers every part of rrm shares: errors, command-line plumbing, devices and processes,
atomic file writes."""
