"""Who may do what: OpenNebula's permissions, ACL rules and quotas as pure logic.

Nothing here reads the store or the network: ``service/access.py`` gathers the
caller, the object and the rules and asks :func:`cloudburst.auth.engine.allowed`.
"""
