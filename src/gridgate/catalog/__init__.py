"""Catalog (R3–R6): business systems, channels, interfaces and their authorizations, components."""
