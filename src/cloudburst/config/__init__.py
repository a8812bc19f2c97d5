"""Configuration: typed settings and the oned.conf reader."""
