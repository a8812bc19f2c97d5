"""The onehost, onevm and onetemplate commands."""
