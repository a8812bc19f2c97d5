"""The OpenNebula-compatible XML-RPC API."""
