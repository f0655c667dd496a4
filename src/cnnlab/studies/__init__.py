"""Measured studies: each claim of the CNN playbook reproduced as a run with a table and a plot."""
