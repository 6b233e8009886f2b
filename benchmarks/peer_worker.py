#!/usr/bin/env python3
"""Standalone worker that runs one *peer* synthesizer on a pooled training table.

It is executed by the python of a peer virtual environment created by
``benchmarks/peer_envs.py`` (never by the project's own venv) and therefore
imports nothing from fedsynth or the rest of the project.

Methods
-------
* ``mst`` / ``aim``  -- smartnoise-synth (snsynth) MST / AIM at (epsilon, delta).
  Every column is discretised here, from PUBLIC schema information only:
  numeric columns into ``bins`` equal-width bins over the public [min, max],
  categorical columns onto the public category list.  snsynth receives a
  purely ordinal table together with a transformer that was fitted on the
  public code domain (never on the data), so no privacy budget is spent on
  preprocessing and neither bounds nor categories are read from the data.
  Missing values (NaN) get one extra code per nullable column, which decodes
  back to NaN.  Values outside the public domain are clipped (numeric) or
  treated as missing (unknown categories).
* ``ctgan`` -- CTGAN (package ``ctgan``) WITHOUT differential privacy, as a
  non-private reference.  Categorical columns are passed as discrete columns;
  NaNs in numeric columns are encoded with an extra ``<col>__isna`` indicator
  column (CTGAN refuses NaN in continuous columns); output is clipped into the
  public [min, max].

Meta JSON (public schema)::

    {"columns": [
        {"name": "c", "type": "categorical", "categories": ["a", "b"]},
        {"name": "x", "type": "continuous" | "integer", "min": 0, "max": 1, "bins": 32}
    ]}

An optional per-column ``"nullable": true|false`` states whether the column
may hold missing values.  When it is absent, a column is treated as nullable
when the training CSV holds at least one NaN in it (one bit of schema per
column, not protected by the DP guarantee; pass ``nullable`` to avoid that).
Values outside the public category list count as missing in a nullable column;
in a column declared ``"nullable": false`` they (and NaNs) go to the first
category (numeric: the middle bin), with a note on stderr.

CLI::

    python peer_worker.py --method mst|aim|ctgan --train train.csv --meta meta.json \
        --out out.csv --epsilon 1 --delta 1e-5 --rows 20000 --seed 0 [--epochs N]

Prints ``wall_time_s=<seconds>`` as its last line of standard output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import pandas as pd

# Default CTGAN epochs, measured on a 20,000-row, 13-column table (6 categorical,
# 7 numeric, ~5% NaN in one) on this project's 2-core machine with one torch
# thread: ~36 CPU-s for the rdt mode-specific normaliser (fixed cost), ~2.8 CPU-s
# per epoch, so 40 epochs train in about 2.5 minutes on an otherwise idle machine.
# One torch thread is the default because, on a 2-core box that is doing anything
# else, two OpenMP threads spin-wait and run ~2x slower per epoch, not faster.
CTGAN_DEFAULT_EPOCHS = 40
CTGAN_DEFAULT_THREADS = 1
CTGAN_DEFAULT_BATCH = 500

NUMERIC_TYPES = ("continuous", "integer")


# --------------------------------------------------------------------------- io
def load_meta(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    cols = meta["columns"] if isinstance(meta, dict) else meta
    out = []
    for c in cols:
        c = dict(c)
        t = c.get("type")
        if t == "categorical":
            if not c.get("categories"):
                raise ValueError(f"categorical column {c['name']!r} needs a public 'categories' list")
        elif t in NUMERIC_TYPES:
            lo, hi = float(c["min"]), float(c["max"])
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise ValueError(f"column {c['name']!r}: bad public bounds [{lo}, {hi}]")
            c["bins"] = int(c.get("bins", 32))
            if c["bins"] < 1:
                raise ValueError(f"column {c['name']!r}: bins must be >= 1")
        else:
            raise ValueError(f"column {c.get('name')!r}: unknown type {t!r}")
        out.append(c)
    return out


def load_train(path: str, cols: list[dict]) -> pd.DataFrame:
    names = [c["name"] for c in cols]
    cat_names = [c["name"] for c in cols if c["type"] == "categorical"]
    # categorical columns are read as strings so that '1' and 1 compare equal
    # to the (stringified) public categories
    df = pd.read_csv(path, dtype={n: str for n in cat_names})
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"train csv lacks columns {missing}")
    df = df[names].copy()
    for c in cols:
        if c["type"] in NUMERIC_TYPES:
            df[c["name"]] = pd.to_numeric(df[c["name"]], errors="coerce")
    return df


def is_nullable(c: dict, col: pd.Series) -> bool:
    """Declared ``nullable`` if given; else whether the column holds NaN (or, for a
    categorical column, a value outside the public category list, which is then
    encoded as missing rather than forced onto a real category)."""
    if "nullable" in c:
        return bool(c["nullable"])
    if col.isna().any():
        return True
    if c["type"] == "categorical":
        known = {_cat_key(v) for v in c["categories"]}
        return not col.dropna().map(_cat_key).isin(known).all()
    return False


def _cat_key(v) -> str:
    # float-looking integers ("1.0") in the meta are matched as written
    return str(v)


def write_out(df: pd.DataFrame, cols: list[dict], path: str) -> None:
    out = pd.DataFrame({c["name"]: df[c["name"]] for c in cols})
    for c in cols:
        if c["type"] == "integer":
            out[c["name"]] = out[c["name"]].astype("Int64")
        elif c["type"] == "continuous":
            out[c["name"]] = out[c["name"]].astype(float)
    out.to_csv(path, index=False)


# ------------------------------------------------------------- discretisation
class Codec:
    """Public-domain discretiser for one column (no data-dependent state)."""

    def __init__(self, c: dict, nullable: bool):
        self.c = c
        self.name = c["name"]
        self.type = c["type"]
        self.nullable = nullable
        if self.type == "categorical":
            self.categories = list(c["categories"])
            self.lookup = {_cat_key(v): i for i, v in enumerate(self.categories)}
            self.n_values = len(self.categories)
        else:
            self.lo, self.hi = float(c["min"]), float(c["max"])
            bins = int(c["bins"])
            self.int_exact = False
            if self.type == "integer":
                lo_i, hi_i = math.ceil(self.lo), math.floor(self.hi)
                self.lo, self.hi = float(lo_i), float(hi_i)
                if hi_i - lo_i + 1 <= bins:
                    # small integer range: one code per integer value
                    self.int_exact = True
                    bins = hi_i - lo_i + 1
            self.bins = bins
            self.width = (self.hi - self.lo) / bins if self.hi > self.lo else 0.0
            self.n_values = bins
            # Explicit public edges (the bins fedsynth's histograms use): code 0 holds x <= edges[0]
            # (a point bin at min), code k >= 1 the interval (edges[k-1], edges[k]].
            self.edges = np.asarray(c["edges"], dtype=float) if c.get("edges") else None
            if self.edges is not None:
                self.int_exact = False
                self.n_values = len(self.edges)
        self.missing_code = self.n_values if nullable else None
        self.cardinality = self.n_values + (1 if nullable else 0)

    def encode(self, s: pd.Series) -> tuple[np.ndarray, int, int]:
        """Return (codes, n_missing_unmapped, n_clipped_or_unknown)."""
        n = len(s)
        codes = np.empty(n, dtype=np.int64)
        if self.type == "categorical":
            isna = s.isna().to_numpy()
            vals = s.astype(object).to_numpy()
            mapped = np.array(
                [self.lookup.get(_cat_key(v), -1) if not na else -1 for v, na in zip(vals, isna, strict=True)],
                dtype=np.int64,
            )
            unknown = (~isna) & (mapped < 0)
            bad = isna | unknown
            codes[:] = mapped
        else:
            x = s.to_numpy(dtype=float)
            isna = np.isnan(x)
            xc = np.clip(np.where(isna, self.lo, x), self.lo, self.hi)
            unknown = (~isna) & ((x < self.lo) | (x > self.hi))
            if self.edges is not None:
                inside = np.searchsorted(self.edges, xc, side="left")
                codes[:] = np.where(xc <= self.edges[0], 0, np.clip(inside, 1, len(self.edges) - 1))
            elif self.int_exact:
                codes[:] = np.rint(xc - self.lo).astype(np.int64)
            elif self.width > 0:
                codes[:] = np.floor((xc - self.lo) / self.width).astype(np.int64)
            else:
                codes[:] = 0
            np.clip(codes, 0, self.n_values - 1, out=codes)
            bad = isna
        n_bad = int(bad.sum())
        if n_bad:
            if self.nullable:
                codes[bad] = self.missing_code
            else:
                # not nullable: put them on the most central code (public choice)
                codes[bad] = self.n_values // 2 if self.type != "categorical" else 0
        return codes, int(isna.sum()), int(unknown.sum())

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pd.Series:
        codes = np.asarray(codes, dtype=np.int64)
        miss = codes >= self.n_values if self.nullable else np.zeros(len(codes), bool)
        k = np.clip(codes, 0, self.n_values - 1)
        if self.type == "categorical":
            cats = np.array(self.categories, dtype=object)
            out = cats[k].astype(object)
            out[miss] = np.nan
            return pd.Series(out, name=self.name, dtype=object)
        if self.edges is not None:
            lo = np.where(k == 0, self.edges[0], self.edges[np.maximum(k - 1, 0)])
            hi = self.edges[k]
            vals = np.where(k == 0, self.edges[0], lo + rng.random(len(k)) * (hi - lo))
            if self.type == "integer":
                vals = np.clip(np.maximum(np.floor(vals) + 1, np.ceil(lo)), self.lo, self.hi)  # inside (lo, hi]
                vals = np.where(k == 0, self.edges[0], np.minimum(vals, np.floor(hi)))
                res = pd.Series(vals, name=self.name).astype("Int64")
                res[miss] = pd.NA
                return res
            vals = np.clip(vals, self.lo, self.hi).astype(float)
            vals[miss] = np.nan
            return pd.Series(vals, name=self.name, dtype=float)
        if self.type == "integer":
            if self.int_exact:
                vals = self.lo + k.astype(float)
            else:
                # uniform over the integers whose code is k
                a = np.ceil(self.lo + k * self.width)
                b = np.ceil(self.lo + (k + 1) * self.width) - 1.0
                b = np.where(k == self.n_values - 1, self.hi, b)
                b = np.maximum(a, b)
                vals = np.floor(a + rng.random(len(k)) * (b - a + 1.0))
                vals = np.minimum(vals, b)
            vals = np.clip(vals, self.lo, self.hi)
            res = pd.Series(vals, name=self.name).astype("Int64")
            res[miss] = pd.NA
            return res
        left = self.lo + k * self.width
        vals = left + rng.random(len(k)) * self.width
        vals = np.clip(vals, self.lo, self.hi)
        vals[miss] = np.nan
        return pd.Series(vals, name=self.name, dtype=float)


# -------------------------------------------------------------- MST / AIM
def run_snsynth(method: str, df: pd.DataFrame, cols: list[dict], args) -> pd.DataFrame:
    warnings.filterwarnings("ignore", message="Pandas dataframe inputs are deprecated")
    from snsynth import Synthesizer
    from snsynth.transform import LabelTransformer, TableTransformer

    codecs = [Codec(c, is_nullable(c, df[c["name"]])) for c in cols]
    enc = {}
    for cd in codecs:
        codes, n_na, n_out = cd.encode(df[cd.name])
        enc[cd.name] = codes
        if n_na and not cd.nullable:
            print(f"[peer_worker] {cd.name}: {n_na} NaN in a column declared non-nullable", file=sys.stderr)
        if n_out:
            what = "unknown categories" if cd.type == "categorical" else "values clipped to public bounds"
            print(f"[peer_worker] {cd.name}: {n_out} {what}", file=sys.stderr)
    codes_df = pd.DataFrame(enc)

    # Fit the label transformers on the PUBLIC code domain (0..card-1), never
    # on the data: identity mapping, nothing read from data, no epsilon spent.
    max_card = max(cd.cardinality for cd in codecs)
    public = pd.DataFrame({cd.name: np.arange(max_card) % cd.cardinality for cd in codecs})
    tt = TableTransformer([LabelTransformer(nullable=False) for _ in codecs])
    tt.fit(public, epsilon=0.0)
    assert tt.fit_complete and not tt.needs_epsilon
    assert tt.cardinality == [cd.cardinality for cd in codecs], (tt.cardinality, [cd.cardinality for cd in codecs])
    spent = tt.odometer.spent[0]
    assert spent == 0.0, spent

    kwargs = {}
    if method == "aim":
        if args.aim_rounds:
            kwargs["rounds"] = args.aim_rounds
        if args.aim_max_model_size:
            kwargs["max_model_size"] = args.aim_max_model_size
    synth = Synthesizer.create(method, epsilon=float(args.epsilon), delta=float(args.delta), verbose=False, **kwargs)
    synth.fit(codes_df, transformer=tt, preprocessor_eps=0.0)
    # snsynth subtracts any preprocessing spend from synth.epsilon; must be untouched
    assert abs(synth.epsilon - float(args.epsilon)) < 1e-12, synth.epsilon
    sampled = synth.sample(int(args.rows))
    if not isinstance(sampled, pd.DataFrame):
        sampled = pd.DataFrame(list(sampled), columns=[cd.name for cd in codecs])
    rng = np.random.default_rng(args.seed + 1)
    out = {cd.name: cd.decode(sampled[cd.name].to_numpy(dtype=np.int64), rng) for cd in codecs}
    return pd.DataFrame(out)


# ------------------------------------------------------------------- CTGAN
MISSING_CAT = "__missing__"


def run_ctgan(df: pd.DataFrame, cols: list[dict], args) -> pd.DataFrame:
    import torch
    from ctgan import CTGAN

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    train = pd.DataFrame(index=df.index)
    discrete = []
    na_flags = {}
    for c in cols:
        n = c["name"]
        s = df[n]
        if c["type"] == "categorical":
            cats = {_cat_key(v): v for v in c["categories"]}
            vals = s.astype(object).where(s.notna(), MISSING_CAT).to_numpy()
            train[n] = [x if (x == MISSING_CAT or _cat_key(x) in cats) else MISSING_CAT for x in vals]
            discrete.append(n)
        else:
            lo, hi = float(c["min"]), float(c["max"])
            x = s.astype(float)
            if x.isna().any():
                flag = f"{n}__isna"
                while flag in df.columns:
                    flag += "_"
                na_flags[n] = flag
                train[flag] = np.where(x.isna(), "1", "0")
                discrete.append(flag)
                x = x.fillna((lo + hi) / 2.0)  # public constant, masked on output
            train[n] = x.clip(lo, hi)

    model = CTGAN(
        epochs=int(args.epochs),
        batch_size=CTGAN_DEFAULT_BATCH,
        verbose=False,
        enable_gpu=False,
    )
    model.set_random_state(args.seed)
    model.fit(train, discrete_columns=discrete)
    synth = model.sample(int(args.rows))

    out = {}
    for c in cols:
        n = c["name"]
        if c["type"] == "categorical":
            cats = {_cat_key(v): v for v in c["categories"]}
            v = synth[n].astype(str)
            out[n] = pd.Series([np.nan if (x == MISSING_CAT or x not in cats) else cats[x] for x in v], dtype=object)
        else:
            lo, hi = float(c["min"]), float(c["max"])
            x = synth[n].astype(float).clip(lo, hi)
            if c["type"] == "integer":
                x = np.rint(x).clip(math.ceil(lo), math.floor(hi))
            if n in na_flags:
                x = x.where(synth[na_flags[n]].astype(str) != "1", np.nan)
            out[n] = x.reset_index(drop=True)
    return pd.DataFrame(out)


# -------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True, choices=["mst", "aim", "ctgan"])
    p.add_argument("--train", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--epochs",
        type=int,
        default=CTGAN_DEFAULT_EPOCHS,
        help=f"CTGAN epochs (default {CTGAN_DEFAULT_EPOCHS}: ~2-3 min for 20k x 13 on 2 CPU cores)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=CTGAN_DEFAULT_THREADS,
        help=f"torch threads for CTGAN (default {CTGAN_DEFAULT_THREADS}; 0 = torch's default)",
    )
    p.add_argument("--aim-rounds", type=int, default=0, help="AIM rounds (0 = snsynth default, 16 x columns)")
    p.add_argument("--aim-max-model-size", type=float, default=0.0, help="AIM max model size in MB (0 = default 80)")
    args = p.parse_args(argv)

    t0, c0 = time.perf_counter(), time.process_time()
    random.seed(args.seed)
    np.random.seed(args.seed)  # snsynth/mbi use the global numpy RNG (selection, sampling)

    cols = load_meta(args.meta)
    df = load_train(args.train, cols)
    if args.method in ("mst", "aim"):
        if not (args.epsilon > 0 and 0 < args.delta < 1):
            raise SystemExit("MST/AIM need epsilon > 0 and 0 < delta < 1")
        out = run_snsynth(args.method, df, cols, args)
    else:
        out = run_ctgan(df, cols, args)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_out(out, cols, args.out)
    wall = time.perf_counter() - t0
    print(f"cpu_time_s={time.process_time() - c0:.3f}")
    print(f"wall_time_s={wall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
