"""Tests of the bundled target_server package (named tests/server so it can never shadow target_server)."""
