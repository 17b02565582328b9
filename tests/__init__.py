"""The test suite: one subfolder per package it tests; shared helpers in tests/support/."""
