"""Rendering only: the terminal summary, summary.json, the HTML page and the figures."""
