"""Every record and key that travels between the coordinator and a site, in one place both sides import.

A coordinator module never imports a site module, and a site module never imports the coordinator:
both read the contract here. ``docs/privacy.md`` ("What a site sends") lists what each reply may
carry; ``tests/test_site_messages.py`` holds the sites to that list.

Messages (Flower message types, with what the coordinator sends in the ``config`` record):

- **query**, round 0: release the DP histograms (``measure``);
- **train**, every round: the global model in ``arrays``, plus ``SERVER_ROUND_KEY`` and ``LR_SCALE_KEY``;
- **evaluate**: ``PURPOSE_KEY`` says which DP release is asked for (``Purpose``), on the table in
  ``SYNTHETIC_KEY``.

Every request carries the public schema (``SCHEMA_KEY``), the federation's policy (``POLICY_KEY``)
and the coordinator's copy of the sites' ledgers (``LEDGERS_KEY``: a site may only add spending from
it). A site that cannot or will not answer replies with a structured failure (``SiteFailure``): a
code and a public reason, never an exception's text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from flwr.app import Error, Message

# Records in a message's content.
CONFIG_RECORD = "config"  # what the coordinator asks (ConfigRecord)
SITE_RECORD = "site"  # who answered: name, jurisdiction, accountant, ledger (ConfigRecord)
METRICS_RECORD = "metrics"  # a site's public figures (MetricRecord)
ARRAYS_RECORD = "arrays"  # the model (ArrayRecord)
HISTOGRAMS_RECORD = "histograms"  # the DP histogram release (ArrayRecord)
COUNTS_RECORD = "counts"  # the DP release check (ConfigRecord)
MODEL_TABLES_RECORD = "model-tables"  # select queries: the model's candidate tables and the site's own one-ways
SECURE_METRICS_RECORD = "fitres.metrics"  # where a site's metrics travel under secure aggregation

# Keys the coordinator sends in the config record.
SCHEMA_KEY = "schema-yaml"
LEDGERS_KEY = "ledgers-json"
POLICY_KEY = "policy-yaml"
SERVER_ROUND_KEY = "server-round"
LR_SCALE_KEY = "lr-scale"
PURPOSE_KEY = "purpose"
SELECT_MEASURE_KEY = "measure-cliques"  # select queries: JSON list of column-name lists to measure now
SELECT_VOTE_KEY = "vote"  # select queries: 1 when the site is asked to vote
SELECT_CANDIDATES_KEY = "candidates"  # select queries: JSON list of the candidate cliques, in table order
SELECT_PENALTY_KEY = "penalty-std"  # select queries: the public noise scale of AIM's small-table preference
SELECT_ROUND_KEY = "selection-round"  # select queries: which selection round (1, 2, ...); labels its noise
ONE_WAY_PREFIX = "one-way:"  # select queries: the site's own round-0 one-way histogram of a column
# select queries: 1 when the site is asked to measure its one-way histograms again (secure-measurement, once);
# the reply carries them under ONE_WAY_PREFIX + column, beside the cliques' counts
SELECT_ONE_WAY_KEY = "measure-one-way"
SYNTHETIC_KEY = "synthetic-csv"
THRESHOLD_KEY = "distance-threshold"
SECAGG_KEYS_FIELD = "secagg-keys"  # JSON list: the packed record's keys, in the order of the legacy parameter list
SECAGG_REQUEST_RECORD_FIELD = "secagg-request-record"  # the record the legacy parameter list came from (default arrays)
SECAGG_REPLY_KEYS_FIELD = "secagg-reply-keys"  # JSON list: the reply's keys in the summed vector (default: request's)
SECAGG_SCALE_FIELD = "secagg-scale"  # the site multiplies its reply by this before quantisation (counts: 2**-20)
# Set by the site's own secure-aggregation mod, never by the coordinator (the mod strips it from plain messages):
# the SecAgg+ threshold of the exchange, the fewest sites whose noise shares any unmasked sum holds.
SECURE_SUM_SITES_FIELD = "secure-sum-sites"


class QueryPurpose:
    """What a query message asks of a site (``PURPOSE_KEY``; absent: the round-0 histograms)."""

    HISTOGRAMS = "histograms"
    SELECT = "select"  # vote for a clique (noisy max) and measure the cliques voted for before


class Purpose:
    """What an evaluate message asks of a site (``PURPOSE_KEY``)."""

    FEEDBACK = "feedback"  # the validator's noisy distance sums and coverage count
    RELEASE_CHECK = "release-check"  # the release gate's noisy counts of copied or close real rows


# Keys in a site's reply.
SITE_NAME_KEY = "name"
JURISDICTION_KEY = "jurisdiction"
BUDGET_KEY = "budget"  # the site's ledger, JSON
WEIGHT_KEY = "num-examples"  # the site's public row count n̂ (declared or DP), the FedAvg weight
UNIT_WEIGHT_KEY = "unit-weight"  # every site reports 1: client-level DP counts sites equally
TRAINED_KEY = "trained-steps"  # 0: the site did not train this round (its budget is spent)
EPSILON_KEY = "epsilon"  # ε the site has spent so far
BUDGET_EXHAUSTED_KEY = "budget-exhausted"  # 1: the site's budget allows no further step
NOISE_STD_KEY = "noise-std"  # the noise std on each released value (public: from the plan)
PAIR_NOISE_STD_KEY = "pair-noise-std"  # measurement replies: the noise std on each two-way count
ONE_WAY_NOISE_STD_KEY = "one-way-noise-std"  # select replies: the noise std of the site's share on a one-way count
NOISE_SHARES_KEY = "noise-shares"  # select replies: how many sites' noise shares the site counted on (1: all its own)
VOTE_KEY = "vote"  # select replies: the index of the candidate the site voted for (-1: no vote asked)
SITE_SECONDS_KEY = "site-seconds"  # train replies in simulation only: the handler's own wall seconds
FEEDBACK_SUM_PREFIX = "sum:"  # feedback replies: "sum:distance:<column>", "sum:covered"
PUBLIC_ROWS_KEY = "public-rows"  # feedback replies: the divisor the coordinator uses


class FailureCode(IntEnum):
    """Why a site did not answer. Flower's own error codes are below 100."""

    REFUSED = 100  # a request the site declines: a second release, a purpose it does not offer, over budget
    NOT_ADMITTED = 101  # the federation's policy does not admit the site's jurisdiction
    NODE_CONFIG = 102  # the site's node configuration cannot run the plan
    DATA = 103  # the site's data does not match the public schema
    FAILED = 104  # an unexpected failure; details stay in the site's own log


@dataclass(frozen=True)
class SiteFailure:
    """A site's structured failure: a code and a public reason (names files, columns, public settings only)."""

    code: int
    reason: str
    site: str | None = None
    jurisdiction: str | None = None

    @property
    def is_refusal(self) -> bool:
        return self.code == FailureCode.REFUSED

    @property
    def not_admitted(self) -> bool:
        return self.code == FailureCode.NOT_ADMITTED

    def reply_to(self, msg: Message) -> Message:
        """The error reply a site sends instead of raising (Flower would send the exception's text)."""
        body = {"reason": self.reason, "site": self.site, "jurisdiction": self.jurisdiction}
        return Message(error=Error(code=int(self.code), reason=json.dumps(body)), reply_to=msg)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def one_line(reason: str, limit: int = 300) -> str:
    """One short line from an error reason (Flower's simulation wraps a Ray traceback around its own errors)."""
    text = _ANSI_ESCAPE.sub("", str(reason))
    if "Message: " in text:  # Flower's ClientAppException: "... occurred. Message: <the exception's text>"
        text = text.rsplit("Message: ", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1].rstrip("'>").strip() if lines else ""
    return (line or "no reason given")[:limit]


def read_failure(msg: Message) -> SiteFailure:
    """The failure in an error reply: a site's structured one, or Flower's own (crash, timeout) as one line."""
    code, raw = int(msg.error.code), str(msg.error.reason or "")
    if code >= FailureCode.REFUSED:
        try:
            body: dict[str, Any] = json.loads(raw)
            return SiteFailure(code, str(body.get("reason", "")), body.get("site"), body.get("jurisdiction"))
        except (ValueError, AttributeError):
            pass
    return SiteFailure(code, one_line(raw))


def site_name(msg: Message) -> str:
    """The name a site gave itself, or its node id."""
    if msg.has_content() and SITE_RECORD in msg.content.config_records:
        name = msg.content.config_records[SITE_RECORD].get(SITE_NAME_KEY)
        if name:
            return str(name)
    if msg.has_error():
        failure = read_failure(msg)
        if failure.site:
            return failure.site
    return f"node-{msg.metadata.src_node_id}"
