"""A Flower ``Grid`` that delivers every message to a site's ``ClientApp`` in this process.

The coordinator's code (``server.federation.run_federation`` and what it calls) talks to the sites
only through a ``Grid``: ``get_node_ids`` and ``send_and_receive`` (``push_messages`` /
``pull_messages`` underneath). ``FakeGrid`` implements Flower 1.42's abstract ``Grid`` with one
``Context`` per simulated site (its own ``state`` kept across rounds, ``node_config`` with
``partition-id`` / ``num-partitions`` as Flower's simulation gives it, the run's config mapping) and
answers each message at once by calling the site's real ``ClientApp`` (``client.client_app.app``:
dispatch by message type, with its mods) on a copy of the message, as the wire would.

What Flower's runtime does around a ``ClientApp`` is copied where the project's code can see it:

- a request gets a fresh ``message_id`` when pushed, and must be a valid request (as
  ``InMemoryGrid._check_message``); the reply is built with ``Message(..., reply_to=msg)``, so its
  ``src_node_id`` is the site's node and ``reply_to_message_id`` the request's id;
- a ``ClientApp`` that raises is answered with Flower's error reply (``ErrorCode``
  ``CLIENT_APP_RAISED_EXCEPTION``, reason ``"<class ...>:<'text'>"``) and the site's context is
  left as it was before the message; the exception is also kept in ``FakeGrid.crashes`` so a test
  can show the traceback instead of a bare failure.

``intercept(msg, context)`` lets a test stand in for a site: return a reply ``Message`` to send
instead of running the ``ClientApp``, ``NO_REPLY`` to drop the message (the site times out), or
``None`` to deliver it normally. Every delivered request is logged in ``FakeGrid.log``.

A real Flower process sets ``TaskIdentity`` (run, node and task ids) before the ``ServerApp`` runs;
``Message(content, dst_node_id, message_type)`` reads it. ``task_identity`` sets it for a test.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedsynth.client import client_app

NO_REPLY = object()  # returned by an intercept: the site never answers this message
Intercept = Callable[[Message, Context], "Message | object | None"]


@dataclass(frozen=True)
class Delivery:
    """One request a site received, and what became of it."""

    node_id: int
    message_type: str
    server_round: int | None
    outcome: str  # "reply", "error", "intercepted", "no reply"


@contextlib.contextmanager
def task_identity(run_id: int) -> Iterator[None]:
    """The identity a Flower ServerApp process runs under (restored afterwards)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@dataclass
class FakeGrid(Grid):
    """A grid of simulated sites, each answered in-process by ``app``."""

    run_config: dict
    num_sites: int
    run_id: int = 7
    app: Callable[[Message, Context], Message] = client_app.app
    intercept: Intercept | None = None
    first_node_id: int = 1001
    contexts: dict[int, Context] = field(init=False)
    log: list[Delivery] = field(default_factory=list, init=False)
    crashes: list[tuple[int, BaseException]] = field(default_factory=list, init=False)
    _replies: dict[str, Message] = field(default_factory=dict, init=False)
    _run: Run = field(init=False)

    def __post_init__(self) -> None:
        self._run = Run.create_empty(self.run_id)
        self.contexts = {
            self.first_node_id + pid: Context(
                run_id=self.run_id,
                node_id=self.first_node_id + pid,
                node_config={"partition-id": pid, "num-partitions": self.num_sites},
                state=RecordDict(),
                run_config=dict(self.run_config),
            )
            for pid in range(self.num_sites)
        }

    # ---- Flower's Grid ----------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as the SuperLink does
            _check_request(msg)
            if msg.metadata.dst_node_id not in self.contexts:
                raise ValueError(f"message to unknown node {msg.metadata.dst_node_id}")
            reply = self._deliver(msg)
            if reply is not None:
                reply.metadata.__dict__["_message_id"] = str(uuid4())
                self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        # Every reply exists as soon as its request is pushed; a dropped one never comes (a timeout).
        return list(self.pull_messages(self.push_messages(messages)))

    # ---- delivery -----------------------------------------------------------------------------

    def _deliver(self, msg: Message) -> Message | None:
        node = msg.metadata.dst_node_id
        received = copy.deepcopy(msg)  # the site gets its own copy, as over the wire
        context = self.contexts[node]
        server_round = _server_round(received)
        kind = received.metadata.message_type
        if self.intercept is not None:
            stand_in = self.intercept(received, context)
            if stand_in is NO_REPLY:
                self.log.append(Delivery(node, kind, server_round, "no reply"))
                return None
            if stand_in is not None:
                self.log.append(Delivery(node, kind, server_round, "intercepted"))
                return copy.deepcopy(stand_in)
        working = copy.deepcopy(context)  # Flower keeps a site's context only when its ClientApp succeeds
        try:
            reply = self.app(received, working)
        except Exception as exc:  # Flower turns any ClientApp exception into an error reply
            self.crashes.append((node, exc))
            reason = str(type(exc)) + ":<'" + str(exc) + "'>"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=received)
        else:
            self.contexts[node] = working
        self.log.append(Delivery(node, kind, server_round, "error" if reply.has_error() else "reply"))
        if reply.metadata.reply_to_message_id != msg.metadata.message_id or reply.metadata.src_node_id != node:
            raise AssertionError(f"reply from node {node} is not addressed as a reply to its request")
        return copy.deepcopy(reply)


def _check_request(msg: Message) -> None:
    """What Flower's ``InMemoryGrid`` demands of a request before it stores it."""
    meta = msg.metadata
    if not (meta.message_id and meta.reply_to_message_id == "" and meta.ttl > 0 and meta.delivered_at == ""):
        raise ValueError(f"invalid message: {meta}")


def _server_round(msg: Message) -> int | None:
    if msg.has_content() and "config" in msg.content.config_records:
        value = msg.content.config_records["config"].get("server-round")
        return int(value) if value is not None else None
    return None


def error_reply(msg: Message, reason: str, code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    """A Flower error reply to ``msg`` (what a crashed or unreachable site sends)."""
    return Message(Error(code=int(code), reason=reason), reply_to=msg)
