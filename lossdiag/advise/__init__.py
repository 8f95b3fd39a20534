"""Advice: what to train with, judged by measured progress rather than by gradient norms alone: the candidate
weightings, the rule that picks among their runs from the same start (run as jobs by from_start), the applied
shares, and the diagnosis that gathers every analysis and check."""
