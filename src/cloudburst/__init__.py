"""cloudburst: a hybrid-cloud manager that speaks OpenNebula's conventions.

It runs a private cloud and bursts into public clouds (EC2 and EC2-compatible
endpoints, partner OpenNebula-compatible clouds, any provider with scripts)
when local capacity runs out.
"""

__version__ = "0.1.0"
