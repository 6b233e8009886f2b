"""Evaluation of synthetic tables: fidelity, utility and privacy metrics.

Every metric takes pandas DataFrames already validated against the public
``Schema`` (``tabular.table.validate_frame`` / ``read_table``: numeric columns as
float, discrete columns as strings) plus that schema, and is deterministic given
a seed. The metrics read real rows: they are for data holders and simulations,
never for the coordinator.

Modules, one job each:

- ``fidelity``: column shapes and pair trends (marginals and pairwise dependence).
- ``prdc``: precision, recall, density and coverage in the codec's encoded space.
- ``detection``: how well a classifier tells real from synthetic rows.
- ``utility``: train on synthetic, test on real (TSTR) beside train on real (TRTR).
- ``privacy``: exact matches, distance to closest record, NNDR, membership inference.
- ``evaluate``: all of the above as one JSON-serialisable report.
- ``report``: JSON cleaning, atomic writing and a short readable summary.
- ``sampling``, ``neighbours`` and ``models``: seeded subsampling and encoding, exact nearest-neighbour
  distances, and the gradient-boosted models the classifier-based metrics fit.
"""
