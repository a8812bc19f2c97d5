"""The store: schema, engines and one repository module per pool."""
