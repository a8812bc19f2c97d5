"""The domain model: states, the life-cycle table and the records of the pools."""
