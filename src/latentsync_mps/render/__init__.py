"""What a person or a script reads: the rich tables and JSON of plans, scans, verify, forecast, doctor
and targets, one module per report.

May import features/, host/, port/ and pack/ (for the types it renders). Never cli/: exit codes are
handed in where a report names one.
"""
