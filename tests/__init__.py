"""Test suite for authbridge (a package so helpers can import tests.support)."""
