"""The mode-collapse monitor: the health of the pooled synthetic sample, judged with no real data.

``collapse`` scores a sample drawn from the global generator after every round, applies the collapse
rule, and keeps the per-round history that decides to record, stop or roll back. Checks that need real
rows run at the sites (``client.site_checks``); the data-sovereignty policy and the release gate live in
``sovereignty/``; the reports in ``reporting/``.
"""
