"""Pure functions from records to small frozen results: dominance, conflict, the suggestion."""
