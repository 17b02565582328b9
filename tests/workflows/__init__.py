"""Tests of the workflows package."""
