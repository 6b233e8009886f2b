"""Server-side validation of a federated run: mode collapse and data sovereignty.

The server never holds real data, so the package is split by where each piece runs:

- ``collapse``: health of the pooled synthetic sample (no real data), the collapse
  rule, and the per-round history that decides to record, stop or roll back.
- ``site_checks``: what a site computes against its own rows (release counts,
  noisy fidelity aggregates and their privacy cost). Only counts or noisy
  aggregates leave the site.
- ``policy``: the federation's data-sovereignty policy file, validated.
- ``release``: the release gate on the final synthetic table.
- ``sovereignty``: the ``sovereignty`` and ``release`` sections of ``report.json``.
- ``report_md``: ``report.md`` with PNG plots for a privacy officer.
"""
