"""The only reader of patches/ and of the tables and facts shipped with lsync-port: rule files
(ruleset.py, rule.py) and the texts files their options name (cuda_texts.py), upstream releases
and their facts (release_facts.py), host stacks (stacks.py), torch's MPS tables (target_torch.py),
forecast tables (forecast_tables.py), TOML (toml_files.py), and their errors (errors.py).

Imports nothing of lsync-port outside pack/ (third-party parsers only): everything above reads its
data through here. What the rule kinds know comes in as a KindCatalog (port/rulepack.py).
"""
