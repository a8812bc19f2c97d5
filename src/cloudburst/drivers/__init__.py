"""Drivers: the contract, the registry and the built-in drivers."""
