"""Stages of the build driver: how a unit of one source kind becomes segment records."""
