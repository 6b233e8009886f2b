"""The federation's data-sovereignty policy and the release gate on the final table.

- ``policy``: the policy file (jurisdictions, ε caps, release rules), validated;
- ``release_gate``: the release rules applied to the final table and the sites' DP release-check counts;
- ``rules``: the participation and ε-cap rules, and the ``sovereignty`` and ``release`` report sections.
"""
