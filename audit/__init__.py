"""The empirical privacy audit (``fedsynth audit``): canary attacks on every DP mechanism and their ε lower bounds."""
