"""The coordinator–site contract: structured failures survive the trip, Flower's own errors read as one line."""

from __future__ import annotations

import time

from flwr.app import ConfigRecord, Error, Message, Metadata, RecordDict

from fedsynth.protocol.messages import FailureCode, SiteFailure, one_line, read_failure, site_name

RAY_REASON = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
    '(pid=1, ip=192.0.2.2)\n  File "client_app.py", line 107, in train\n    raise SimulatedFaultError(...)\n'
    "client.client_app.SimulatedFaultError: simulated failure of site-2 in round 3\n\n"
    "flwr.clientapp.client_app.ClientAppException: \n"
    "Exception ClientAppException occurred. Message: simulated failure of site-2 in round 3'>"
)


def request(node: int = 7) -> Message:
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=node, reply_to_message_id="",
                    group_id="1", created_at=time.time(), ttl=60, message_type="train")  # fmt: skip
    return Message(RecordDict({"config": ConfigRecord({})}), metadata=meta)


def test_one_line_is_short_and_drops_flowers_wrapping():
    assert one_line(RAY_REASON) == "simulated failure of site-2 in round 3"
    assert one_line("site crashed") == "site crashed"
    assert one_line("Traceback ...\n  File x\nValueError: bad input\n") == "ValueError: bad input"
    assert one_line("") == "no reason given"
    assert len(one_line("x" * 5000)) == 300


def test_a_structured_failure_survives_the_reply_with_its_code_site_and_jurisdiction():
    sent = SiteFailure(FailureCode.NOT_ADMITTED, "jurisdiction 'mars' is not allowed", "region=x", "mars")
    reply = sent.reply_to(request())
    assert reply.has_error() and not reply.has_content()
    assert reply.error.code == FailureCode.NOT_ADMITTED
    received = read_failure(reply)
    assert received == sent and received.not_admitted and not received.is_refusal
    assert site_name(reply) == "region=x"
    refused = read_failure(SiteFailure(FailureCode.REFUSED, "a second release is refused").reply_to(request()))
    assert refused.is_refusal and refused.site is None


def test_flowers_own_errors_keep_their_code_and_read_as_one_line():
    reply = Message(error=Error(code=2, reason=RAY_REASON), reply_to=request(node=9))
    failure = read_failure(reply)
    assert failure.code == 2 and failure.reason == "simulated failure of site-2 in round 3"
    assert not failure.is_refusal and failure.site is None
    assert site_name(reply) == "node-9"
