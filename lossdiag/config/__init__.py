"""Every option and threshold with its default (options), the term-name pairs options take (pairs), and the YAML
overlay on top of the defaults (yaml_file)."""
from lossdiag.config.options import (FIELDS, MAX_POINTS, Config, check_device, check_out_folder, cli_flag, origin_of,
                                     resolve)
from lossdiag.config.pairs import check_known_terms, format_pairs, parse_main, parse_pairs, parse_weights, quote_name
from lossdiag.config.yaml_file import load, oversized_number, read_yaml

__all__ = ["FIELDS", "MAX_POINTS", "Config", "check_device", "check_known_terms", "check_out_folder", "cli_flag",
           "format_pairs", "load", "origin_of", "oversized_number", "parse_main", "parse_pairs", "parse_weights",
           "quote_name", "read_yaml", "resolve"]
