"""One driver per sweep: a lock file ``<sweep>/driver.lock`` with holder, host, pid and a heartbeat.

Local disk: the lock is taken by an atomic create-if-absent (``os.open(O_CREAT | O_EXCL)``), so of
two drivers starting together exactly one gets it. Object storage (``s3://``...): pyarrow has no
conditional PUT, so the lock is best effort there: write only when absent, then read back after a
pause and keep it only if our token is still the one stored (two drivers starting within that
pause on different machines could in principle both proceed; documented in the README).

A lock whose heartbeat is older than ``STALE_S`` (or whose pid is gone on this host) belongs to a
dead driver: it is taken over, with a message naming the old holder.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import socket
import threading
import time
import uuid

from hybridlt.errors import InputError
from hybridlt.sweep.store import Location

STALE_S = 60.0  # a live driver rewrites its heartbeat every HEARTBEAT_S
HEARTBEAT_S = 10.0
OBJECT_STORE_SETTLE_S = 2.0


class SweepLockedError(InputError):
    """Another live driver holds the sweep; the message names it and how to take over."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepLock:
    """``acquire()`` / ``release()``; a daemon thread keeps the heartbeat fresh while held."""

    def __init__(self, sweep_dir: str, sweep_name: str, say=print):
        self.loc = Location.of(sweep_dir) / "driver.lock"
        self.name, self.say = sweep_name, say
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _doc(self) -> dict:
        host = socket.gethostname()
        return {"holder": f"{getpass.getuser()}@{host} pid {os.getpid()}", "host": host, "pid": os.getpid(),
                "token": self.token, "started": getattr(self, "_started", time.time()), "heartbeat": time.time()}

    def read(self) -> dict | None:
        try:
            return json.loads(self.loc.read_bytes())
        except (OSError, ValueError):
            return None if not self.loc.exists() else {}

    def _create_if_absent(self) -> bool:
        data = json.dumps(self._doc()).encode()
        if self.loc.is_local:
            os.makedirs(os.path.dirname(self.loc.path), exist_ok=True)
            try:
                fd = os.open(self.loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
        if self.loc.exists():  # object storage: best effort (no conditional PUT in pyarrow)
            return False
        self.loc.write_bytes(data)
        time.sleep(OBJECT_STORE_SETTLE_S)
        return (self.read() or {}).get("token") == self.token

    def stale_reason(self, doc: dict) -> str | None:
        """Why the lock ``doc`` belongs to a dead driver, or None when its holder may be alive."""
        if not doc:
            return "the lock file is unreadable"
        age = time.time() - float(doc.get("heartbeat", 0))
        if doc.get("host") == socket.gethostname() and not _pid_alive(int(doc.get("pid", -1))):
            return f"pid {doc.get('pid')} is not running on {doc.get('host')}"
        if age > STALE_S:
            return f"its last heartbeat is {age:.0f} s old (> {STALE_S:.0f} s)"
        return None

    def acquire(self) -> None:
        self._started = time.time()
        for _ in range(3):
            if self._create_if_absent():
                break
            doc = self.read()
            if doc is None:
                continue  # released meanwhile: try again
            reason = self.stale_reason(doc)
            if reason is None:
                age = time.time() - float(doc.get("heartbeat", 0))
                raise SweepLockedError(
                    f"sweep {self.name!r} is being run by another driver: {doc.get('holder')} (heartbeat {age:.0f} s "
                    f"ago, lock {self.loc}); wait for it to end, or stop it (Ctrl-C) and run --resume; a dead "
                    f"driver's lock is taken over by itself once its heartbeat is over {STALE_S:.0f} s old")
            self.say(f"taking over the lock of sweep {self.name!r} from {doc.get('holder', '?')}: {reason}")
            self._remove_if(doc.get("token"))
        else:
            raise SweepLockedError(f"sweep {self.name!r}: could not take the lock {self.loc} (contended); retry")
        self._thread = threading.Thread(target=self._beat, name="hybridlt-lock-heartbeat", daemon=True)
        self._thread.start()

    def _remove_if(self, token) -> None:
        doc = self.read()
        if doc is not None and doc.get("token") == token:
            try:
                self.loc.fs.delete_file(self.loc.path)
            except OSError as exc:
                if getattr(exc, "errno", None) not in (errno.ENOENT, None):
                    raise

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if (self.read() or {}).get("token") != self.token:
                    return  # taken over: a later driver owns the sweep now
                self.loc.write_bytes(json.dumps(self._doc()).encode())  # atomic replace
            except OSError:
                pass  # a full disk: the heartbeat goes stale, the run itself reports the error

    def release(self) -> None:
        self._stop.set()
        try:
            self._remove_if(self.token)
        except OSError:
            pass
