"""Placement: pure host selection and the demand/candidate builders."""
