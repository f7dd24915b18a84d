"""Tests of the KasPro sandbox (a package so its conftest has a module name of its own)."""
