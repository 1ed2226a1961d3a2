"""
An in-process Kafka cluster: librdkafka's built-in mock cluster, driven through ctypes.

The librdkafka shared library shipped inside the ``confluent-kafka`` wheel
(``site-packages/confluent_kafka.libs/librdkafka-<hash>.so.1``) exports the experimental
``rd_kafka_mock_*`` API (``rdkafka_mock.h``). A mock cluster is owned by an ``rd_kafka_t``
handle (a bare producer handle here) and runs its brokers on a thread of its own; each broker
listens on ``127.0.0.1`` on an ephemeral port. Any Kafka client, the real
``confluent_kafka.Producer``/``Consumer`` included, reaches it through
:attr:`MockKafkaCluster.bootstrap_servers`.

What the mock supports: Produce (plain and idempotent, transactions), Fetch, Metadata,
ListOffsets (earliest/latest), consumer groups with the classic protocol
(FindCoordinator/JoinGroup/SyncGroup/Heartbeat/LeaveGroup), OffsetCommit/OffsetFetch,
error injection, broker down/up, per-broker RTT.

Known gaps, to keep in mind when a test behaves differently from a real broker:

* **No CreateTopics** (nor DeleteTopics) Admin API: create topics through
  :meth:`MockKafkaCluster.create_topic` before clients use them. (Clients that rely on
  ``allow.auto.create.topics`` get auto-created one-partition topics from a Metadata or
  Produce request, which is seldom what a test wants.)
* **No ListOffsets by timestamp**: ``Consumer.offsets_for_times()`` answers offset ``-1``
  for every timestamp; only the logical ``OFFSET_BEGINNING``/``OFFSET_END`` work.
* **Memory only**: every record, committed offset and group lives in the process and is
  gone on :meth:`MockKafkaCluster.close`.
* **A bounded log per partition, silently trimmed**: ``rd_kafka_mock_partition_init()`` (in
  ``src/rdkafka_mock.c``, librdkafka 2.16 as in earlier 2.x) hard-codes ``max_size`` to 5 MiB and
  ``max_cnt`` to 100,000 message sets (produce batches), and ``rd_kafka_mock_msgset_new()`` drops the
  oldest batches on every append past either limit, moving the low watermark up. No mock API,
  ``test.mock.*`` property or topic config changes them (``PARTITION_LOG_MAX_BYTES``,
  ``PARTITION_LOG_MAX_BATCHES``). ``DevStack.evicted()`` detects it; the ``devstack`` command stops
  with exit status 1 when it happens.
* **Group members linger for ``session.timeout.ms``**: a consumer that goes away without
  a LeaveGroup (or whose LeaveGroup is lost) stays a member until its session times out,
  and the next rebalance waits for it. Keep ``session.timeout.ms`` low in tests (for
  example 6000) and close consumers properly.
* The group coordinator waits ``group.initial.rebalance.delay.ms`` (3 s by default, as on a
  real broker) before the first rebalance of an empty group; this class sets it to 0 when
  the library exports ``rd_kafka_mock_group_initial_rebalance_delay_ms``.
* **An emptied group is held in rebalance**: when the last member leaves, the coordinator
  goes to "Joining" with a timer of ``session.timeout.ms - 1000`` ms (of the member that
  left); a new consumer of the same group gets its JoinGroup answer only when that timer
  fires (about 5 s with ``session.timeout.ms=6000``, 2 s with 3000).
* A Fetch for partitions without new data is held ``fetch.wait.max.ms`` (500 ms default),
  and with one Fetch in flight per connection, retries after an error wait behind it;
  ``fetch.wait.max.ms=100`` keeps error-recovery tests quick.
* Injected request errors (:meth:`MockKafkaCluster.push_request_errors`) are cluster wide
  and consumed one per matching request, whichever broker receives it. Some are surfaced
  to the application as non-fatal consumer errors (an injected Fetch ``REQUEST_TIMED_OUT``
  is), others are retried silently (``NOT_LEADER_FOR_PARTITION``, ``_TRANSPORT``, ...).
* :meth:`MockKafkaCluster.broker_down` closes the broker's listener too: clients log
  "Connection refused" until :meth:`MockKafkaCluster.broker_up`, then reconnect after their
  ``reconnect.backoff.ms`` (keep ``reconnect.backoff.max.ms`` low in tests).
* Control calls (topic creation, broker down/up, RTT, ...) are ops served by the mock's
  thread, which can miss a wake-up and sleep up to 1 s; this module works around it (see
  ``MockKafkaCluster._op``).

The mock API is marked experimental by librdkafka and is not covered by its ABI promises;
this module binds only the functions it finds and raises :class:`MockKafkaUnavailable` for
those the loaded library lacks.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import socket
import threading
from typing import Iterable, NamedTuple

__all__ = [
    "ApiKey",
    "Err",
    "MockKafkaCluster",
    "MockKafkaUnavailable",
    "MockRequest",
    "PARTITION_LOG_MAX_BATCHES",
    "PARTITION_LOG_MAX_BYTES",
    "find_librdkafka",
]

# The mock's fixed per-partition log limits (rd_kafka_mock_partition_init); past either, it evicts the oldest.
PARTITION_LOG_MAX_BYTES = 5 * 1024 * 1024
PARTITION_LOG_MAX_BATCHES = 100_000


class ApiKey:
    """Kafka protocol request types (``ApiKey``), as used by the error-injection calls."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_CONFIGS = 32
    OFFSET_DELETE = 47
    CONSUMER_GROUP_HEARTBEAT = 68


class Err:
    """
    librdkafka error codes (``rd_kafka_resp_err_t``), the same numbers as
    ``confluent_kafka.KafkaError``. Negative values are client-internal; of those only
    ``_TRANSPORT`` means something to the mock broker: it drops the connection instead
    of answering.
    """

    NO_ERROR = 0
    _TRANSPORT = -195
    _ALL_BROKERS_DOWN = -187
    UNKNOWN = -1
    OFFSET_OUT_OF_RANGE = 1
    UNKNOWN_TOPIC_OR_PART = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_FOR_PARTITION = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    ILLEGAL_GENERATION = 22
    UNKNOWN_MEMBER_ID = 25
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    KAFKA_STORAGE_ERROR = 56
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    THROTTLING_QUOTA_EXCEEDED = 89
    UNKNOWN_TOPIC_ID = 100


class MockKafkaUnavailable(RuntimeError):
    """librdkafka, or the part of its mock API that was asked for, cannot be loaded."""


class MockRequest(NamedTuple):
    """One request the mock cluster received while request tracking was on."""

    broker_id: int
    api_key: int
    timestamp_us: int


_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_ERRSTR_SIZE = 512

_vp = ctypes.c_void_p
_i16 = ctypes.c_int16
_i32 = ctypes.c_int32
_int = ctypes.c_int
_size = ctypes.c_size_t
_str = ctypes.c_char_p

# name: (restype, argtypes). Pointers are c_void_p, never the default int, which would
# truncate them to 32 bits. rd_kafka_resp_err_t is a C enum, i.e. an int.
_SIGNATURES = {
    "rd_kafka_conf_new": (_vp, []),
    "rd_kafka_conf_destroy": (None, [_vp]),
    "rd_kafka_conf_set": (_int, [_vp, _str, _str, _str, _size]),
    "rd_kafka_new": (_vp, [_int, _vp, _str, _size]),
    "rd_kafka_destroy": (None, [_vp]),
    "rd_kafka_err2str": (_str, [_int]),
    "rd_kafka_mock_cluster_new": (_vp, [_vp, _int]),
    "rd_kafka_mock_cluster_destroy": (None, [_vp]),
    "rd_kafka_mock_cluster_bootstraps": (_str, [_vp]),
    "rd_kafka_mock_topic_create": (_int, [_vp, _str, _int, _int]),
    "rd_kafka_mock_broker_set_down": (_int, [_vp, _i32]),
    "rd_kafka_mock_broker_set_up": (_int, [_vp, _i32]),
    "rd_kafka_mock_broker_set_rtt": (_int, [_vp, _i32, _int]),
    "rd_kafka_mock_push_request_errors_array": (None, [_vp, _i16, _size, ctypes.POINTER(_int)]),
    "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [_vp, _i32]),
    "rd_kafka_mock_start_request_tracking": (None, [_vp]),
    "rd_kafka_mock_stop_request_tracking": (None, [_vp]),
    "rd_kafka_mock_clear_requests": (None, [_vp]),
    "rd_kafka_mock_get_requests": (ctypes.POINTER(_vp), [_vp, ctypes.POINTER(_size)]),
    "rd_kafka_mock_request_id": (_i32, [_vp]),
    "rd_kafka_mock_request_api_key": (_i16, [_vp]),
    "rd_kafka_mock_request_timestamp": (ctypes.c_int64, [_vp]),
    "rd_kafka_mock_request_destroy_array": (None, [ctypes.POINTER(_vp), _size]),
}

_REQUIRED = (
    "rd_kafka_conf_new",
    "rd_kafka_conf_destroy",
    "rd_kafka_conf_set",
    "rd_kafka_new",
    "rd_kafka_destroy",
    "rd_kafka_mock_cluster_new",
    "rd_kafka_mock_cluster_destroy",
    "rd_kafka_mock_cluster_bootstraps",
)

_lib = None
_lib_lock = threading.Lock()


def find_librdkafka() -> str:
    """
    The path of the librdkafka shared library to load: the copy bundled in the
    confluent-kafka wheel (the one its ``cimpl`` module is linked against) when there is
    one, else whatever the dynamic linker would find for ``rdkafka``.
    """
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is not None and spec.submodule_search_locations:
        for package_dir in spec.submodule_search_locations:
            libs_dir = os.path.join(os.path.dirname(package_dir), "confluent_kafka.libs")
            candidates = sorted(glob.glob(os.path.join(libs_dir, "librdkafka*.so*")))
            candidates += sorted(glob.glob(os.path.join(libs_dir, "librdkafka*.dylib")))
            if candidates:
                return candidates[0]
    found = ctypes.util.find_library("rdkafka")
    if found:
        return found
    raise MockKafkaUnavailable(
        "librdkafka not found: install confluent-kafka (its wheel ships the library) "
        "or a system librdkafka"
    )


def _load():
    """librdkafka, loaded once through ctypes."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = find_librdkafka()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise MockKafkaUnavailable(f"cannot load librdkafka from {path}: {exc}") from exc
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name, None)
            if fn is None:
                if name in _REQUIRED:
                    raise MockKafkaUnavailable(f"{path} does not export {name}")
                continue
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = lib
        return lib


class MockKafkaCluster:
    """
    A librdkafka mock cluster with ``num_brokers`` brokers (ids 1..N), listening on
    127.0.0.1. Usable as a context manager; :meth:`close` is idempotent.

    ``initial_rebalance_delay_ms`` (default 0) is the coordinator's
    ``group.initial.rebalance.delay.ms``; 0 makes the first join of a group immediate.

    Only the controls this project's dev stack, tests and benches use are wrapped: topic
    creation, broker down/up, RTT, request-error injection and request tracking. Other
    ``rd_kafka_mock_*`` functions (leaders, coordinators, API versions, racks, ...) are left
    out; bind them in ``_SIGNATURES`` and add a method when a test needs one.
    """

    def __init__(self, num_brokers: int = 1, *, initial_rebalance_delay_ms: int | None = 0):
        if num_brokers < 1:
            raise ValueError("num_brokers must be at least 1")
        self._lib = _load()
        self._lock = threading.RLock()
        self._rk = None
        self._mcluster = None
        self.num_brokers = num_brokers

        lib = self._lib
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        conf = lib.rd_kafka_conf_new()
        if not conf:
            raise MockKafkaUnavailable("rd_kafka_conf_new failed")
        # The owner handle never connects anywhere; keep its logger to real errors (the
        # default would warn about the missing bootstrap.servers).
        for key, value in (("log_level", "3"), ("client.id", "academy-devstack-mock")):
            if lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, _ERRSTR_SIZE) != _RD_KAFKA_CONF_OK:
                lib.rd_kafka_conf_destroy(conf)
                raise MockKafkaUnavailable(f"rd_kafka_conf_set({key}): {errstr.value.decode(errors='replace')}")
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:
            # rd_kafka_new() takes ownership of conf only when it succeeds.
            lib.rd_kafka_conf_destroy(conf)
            raise MockKafkaUnavailable(f"rd_kafka_new: {errstr.value.decode(errors='replace')}")
        self._rk = rk
        mcluster = lib.rd_kafka_mock_cluster_new(rk, num_brokers)
        if not mcluster:
            lib.rd_kafka_destroy(rk)
            self._rk = None
            raise MockKafkaUnavailable("rd_kafka_mock_cluster_new failed")
        self._mcluster = mcluster
        self._bootstrap_servers = lib.rd_kafka_mock_cluster_bootstraps(mcluster).decode()
        self._addresses = []
        for hostport in self._bootstrap_servers.split(","):
            host, _, port = hostport.rpartition(":")
            self._addresses.append((host, int(port)))
        if initial_rebalance_delay_ms is not None and hasattr(lib, "rd_kafka_mock_group_initial_rebalance_delay_ms"):
            lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, initial_rebalance_delay_ms)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of the brokers."""
        return self._bootstrap_servers

    @property
    def closed(self) -> bool:
        return self._mcluster is None

    def close(self) -> None:
        """Destroy the cluster (closing its listeners and client connections), then its owner handle."""
        with self._lock:
            mcluster, self._mcluster = self._mcluster, None
            rk, self._rk = self._rk, None
        if mcluster:
            # Destroying posts a terminate op to the mock thread: same wake-up race as _op.
            with self._nudging():
                self._lib.rd_kafka_mock_cluster_destroy(mcluster)
        if rk:
            self._lib.rd_kafka_destroy(rk)

    def __enter__(self) -> "MockKafkaCluster":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - safety net only
        try:
            self.close()
        except Exception:  # pylint: disable=broad-exception-caught  # nothing may escape __del__
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._bootstrap_servers
        return f"<MockKafkaCluster brokers={self.num_brokers} {state}>"

    # -- helpers ---------------------------------------------------------------------------

    def _cluster(self):
        if self._mcluster is None:
            raise RuntimeError("mock cluster is closed")
        return self._mcluster

    def _fn(self, name: str):
        fn = getattr(self._lib, name, None)
        if fn is None:
            raise MockKafkaUnavailable(f"the loaded librdkafka does not export {name}")
        return fn

    def _op(self, name: str, *args) -> int:
        """
        Call a mock function that hands an op to the mock cluster's thread and waits for it.

        That thread sleeps in poll() for up to a second between timer events and is woken by
        a byte on an internal pipe. An op enqueued while the thread is between serving its
        queue and draining that pipe loses its wake-up (a race in librdkafka) and waits out
        the whole second. To keep calls fast, a helper connects to a broker's listener if the
        op is not done after a few milliseconds: the listener becoming readable ends the
        poll() too. (Listeners of brokers that are down are closed, so with every broker down
        the occasional one-second wait remains.)
        """
        fn = self._fn(name)
        cluster = self._cluster()
        with self._nudging():
            return fn(cluster, *args)

    @contextlib.contextmanager
    def _nudging(self):
        """While inside: connect to the brokers now and then, so that the mock cluster's threads wake up."""
        done = threading.Event()
        nudger = threading.Thread(target=self._nudge_until, args=(done,), name="mock-kafka-nudge", daemon=True)
        nudger.start()
        try:
            yield
        finally:
            done.set()
            nudger.join()

    def _nudge_until(self, done: threading.Event) -> None:
        """Connect to each broker address until ``done`` is set."""
        delay = 0.02
        while not done.wait(delay):
            delay = 0.1
            for address in self._addresses:
                try:
                    with socket.create_connection(address, timeout=0.2):
                        pass
                    break
                except OSError:
                    continue

    def _check(self, err: int, what: str) -> None:
        if err:
            message = self._lib.rd_kafka_err2str(err)
            raise RuntimeError(f"{what} failed: {message.decode() if message else err} ({err})")

    # -- topics ----------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create ``name`` (the mock has no CreateTopics API). ``replication_factor`` <= brokers."""
        with self._lock:
            err = self._op("rd_kafka_mock_topic_create", name.encode(), partitions, replication_factor)
        self._check(err, f"create_topic({name!r})")

    # -- brokers ---------------------------------------------------------------------------

    def broker_down(self, broker_id: int) -> None:
        """Disconnect the broker's clients and refuse new connections (-1: every broker). No leader change."""
        with self._lock:
            err = self._op("rd_kafka_mock_broker_set_down", broker_id)
        self._check(err, f"broker_down({broker_id})")

    def broker_up(self, broker_id: int) -> None:
        """Accept connections again (-1: every broker)."""
        with self._lock:
            err = self._op("rd_kafka_mock_broker_set_up", broker_id)
        self._check(err, f"broker_up({broker_id})")

    def set_rtt(self, broker_id: int, ms: int) -> None:
        """Delay every response of the broker by ``ms`` milliseconds (-1: every broker)."""
        with self._lock:
            err = self._op("rd_kafka_mock_broker_set_rtt", broker_id, ms)
        self._check(err, f"set_rtt({broker_id})")

    # -- error injection -------------------------------------------------------------------

    def push_request_errors(self, api_key: int, errors: Iterable[int]) -> None:
        """
        Make the next ``len(errors)`` requests of type ``api_key`` (to any broker) fail with
        these error codes, in order. ``Err._TRANSPORT`` makes the broker drop the connection.
        """
        errors = [int(e) for e in errors]
        if not errors:
            return
        array = (_int * len(errors))(*errors)
        with self._lock:
            self._fn("rd_kafka_mock_push_request_errors_array")(self._cluster(), api_key, len(errors), array)

    # -- request tracking ------------------------------------------------------------------

    def start_request_tracking(self) -> None:
        with self._lock:
            self._fn("rd_kafka_mock_start_request_tracking")(self._cluster())

    def stop_request_tracking(self) -> None:
        with self._lock:
            self._fn("rd_kafka_mock_stop_request_tracking")(self._cluster())

    def clear_requests(self) -> None:
        with self._lock:
            self._fn("rd_kafka_mock_clear_requests")(self._cluster())

    def get_requests(self) -> list[MockRequest]:
        """The requests received since tracking started (or was last cleared)."""
        get = self._fn("rd_kafka_mock_get_requests")
        destroy = self._fn("rd_kafka_mock_request_destroy_array")
        count = _size(0)
        with self._lock:
            array = get(self._cluster(), ctypes.byref(count))
        if not array:
            return []
        try:
            return [
                MockRequest(
                    self._lib.rd_kafka_mock_request_id(array[i]),
                    self._lib.rd_kafka_mock_request_api_key(array[i]),
                    self._lib.rd_kafka_mock_request_timestamp(array[i]),
                )
                for i in range(count.value)
            ]
        finally:
            destroy(array, count.value)
