"""Fault injection for the poison-record tests: off unless ``MODERATION_FAULTS__ENABLED``.

An image whose bytes carry a marker makes the process that handles it misbehave the way a
decoder bug would, so the tests can show that such a record ends as one ``poison_record``
dead letter while everything else is decided:

    moderation-fault:kill-worker     the worker dies of SIGSEGV while validating it
    moderation-fault:crash-stub      Triton's python-backend stub exits while decoding it
    moderation-fault:hang-stub=S     the stub sleeps S seconds while decoding it

Read from the environment (not only the settings root) because the Triton python backend
reads it too, as it reads the image limits. Never enable it in production: anyone who can
produce an upload could then stop a process.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import time

ENV = "MODERATION_FAULTS__ENABLED"
_MARKER = re.compile(rb"moderation-fault:(kill-worker|crash-stub|hang-stub)(?:=(\d{1,3}))?")


def enabled_from_env() -> bool:
    return os.environ.get(ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def marker(kind: str, seconds: int | None = None) -> bytes:
    """The bytes to append to an image (after its end, where decoders ignore them)."""
    return f"moderation-fault:{kind}".encode() + (b"" if seconds is None else b"=%d" % seconds)


def inject(image: bytes, where: str) -> None:
    """Misbehave if ``image`` carries a marker meant for ``where`` (worker or stub)."""
    found = _MARKER.search(image[-64:])  # markers are appended: never scan a whole image
    if found is None:
        return
    kind = found.group(1).decode()
    if where == "worker" and kind == "kill-worker":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash test leaves no core file
        os.kill(os.getpid(), signal.SIGSEGV)
    elif where == "stub" and kind == "crash-stub":
        os._exit(70)
    elif where == "stub" and kind == "hang-stub":
        time.sleep(int(found.group(2) or 10))
