"""The only reader of patches/ and of the shipped tables and facts: rule files (ruleset.py, rule.py),
upstream releases and their facts (release_facts.py), host stacks (stacks.py), torch's MPS tables
(target_torch.py), forecast tables (forecast_tables.py), TOML (toml_files.py), their errors
(errors.py). Imports only itself (and third-party parsers); what the rule kinds know comes in as
a KindCatalog (port/rulepack.py)."""
