"""Served models: a common interface (:mod:`.base`) and one loader module per format."""
