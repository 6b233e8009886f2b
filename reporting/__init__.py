"""A run's reports: ``report.json`` (``run_report``) and ``report.md`` with its plots (``markdown``)."""
