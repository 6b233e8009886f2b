"""The DP marginals feature, one job per module: from the public bins to a calibrated table.

- ``bins``: the public bins of every column and of measured pairs, from the schema alone, and
  counting rows into them (at the site);
- ``release``: the site's DP release of its histograms (one Gaussian mechanism, discrete
  Gaussian noise) and its wire format;
- ``estimate``: what the coordinator builds from the sites' noisy counts (the DP row count,
  pooled one-way marginals, consistent two-way ones, sampling independent columns);
- ``calibration``: matching the generator's output to those marginals and raking it to the
  two-way ones (post-processing).

Everything after ``release`` reads only DP outputs: it is post-processing and costs no privacy.
"""
