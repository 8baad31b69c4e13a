"""Bundled scenario files (TOML). A package so that the files ship as package data."""
