"""The wire contract: upload events in, decisions and dead-letter records out. Pure logic.

Input value: JSON ``{"upload_id", "image_b64" | "image_url", "user_id"?, "surface"?,
"created_at"? (RFC 3339), "metadata"? (object)}``, or the raw image bytes as the value with
the upload id in header ``upload-id``. Bad input raises ``InputError`` with a stable
``reason`` that becomes the dead letter's ``error-type`` header.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, Literal, NamedTuple

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moderation.contract.errors import ModerationError

UPLOAD_ID_HEADER = "upload-id"
MAX_UPLOAD_ID = 256
_UPLOAD_ID = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable ASCII, no spaces or controls

# deepest nesting of arrays and objects accepted in a JSON event (the event object is level
# 1, so metadata may nest 31 levels); deeper events are invalid_json, never a RecursionError
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: linear on long strings
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")

Headers = Sequence[tuple[str, bytes]]


class InputError(ModerationError):
    """An upload event that can never be decided; goes to the dead-letter topic."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UploadEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    upload_id: str
    image_b64: str | None = None
    image_url: str | None = None
    user_id: str | None = None
    surface: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_image_source(self) -> UploadEvent:
        if (self.image_b64 is None) == (self.image_url is None):
            raise ValueError("exactly one of image_b64 and image_url is required")
        return self


class Upload(BaseModel):
    """A parsed event: the id, the image bytes (or a URL still to fetch), the context."""

    model_config = ConfigDict(frozen=True)

    upload_id: str
    image: bytes | None
    image_url: str | None
    created_at: datetime | None
    event: UploadEvent | None = None


def _check_upload_id(upload_id: str) -> str:
    if not _UPLOAD_ID.fullmatch(upload_id):
        shown = upload_id[:64].encode("unicode_escape").decode()
        raise InputError("invalid_upload_id",
                         f"upload_id must be 1-{MAX_UPLOAD_ID} printable ASCII characters "
                         f"without spaces, got {shown!r} ({len(upload_id)} characters)")
    return upload_id


def _header(headers: Headers, name: str) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _validation_reason(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or "event"
    if err["type"] == "missing":
        return "missing_field", f"field '{field}' is required"
    if err["type"] == "extra_forbidden":
        return "unknown_field", f"field '{field}' is not part of the upload event"
    if err["type"] == "value_error":
        return "missing_field", err["msg"].removeprefix("Value error, ")
    return "wrong_type", f"field '{field}': {err['msg']}"


def json_depth(value: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings ignored)."""
    brackets = _JSON_STRING.sub(b'""', value).translate(None, _NOT_BRACKET)
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def _load_json(value: bytes) -> Any:
    # counting brackets first is cheap: a base64 image has none
    if value.count(b"[") + value.count(b"{") > MAX_JSON_DEPTH \
            and (depth := json_depth(value)) > MAX_JSON_DEPTH:
        raise InputError("invalid_json", f"JSON nests {depth} levels deep, limit "
                         f"{MAX_JSON_DEPTH}")
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:  # ValueError: bad syntax, UTF-8, huge ints
        raise InputError("invalid_json", f"value is not valid JSON: {exc}") from exc


def parse_upload(value: bytes | None, headers: Headers = (), max_bytes: int = 30_000_000
                 ) -> Upload:
    """Parse one Kafka record into an ``Upload`` or raise ``InputError``."""
    if value is None or len(value) == 0:
        raise InputError("empty_message", "the message value is empty")
    if len(value) > max_bytes:
        raise InputError("message_too_large", f"message is {len(value)} bytes, limit {max_bytes}")
    if value.lstrip()[:1] not in (b"{", b"["):  # not JSON: a raw image
        raw_id = _header(headers, UPLOAD_ID_HEADER)
        if raw_id is None:
            raise InputError("missing_upload_id",
                             "a raw image value needs the upload id in header 'upload-id'")
        try:
            upload_id = raw_id.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("invalid_upload_id", "header 'upload-id' is not UTF-8") from exc
        return Upload(upload_id=_check_upload_id(upload_id), image=value, image_url=None,
                      created_at=None)
    doc = _load_json(value)
    if not isinstance(doc, dict):
        raise InputError("invalid_json", "value must be a JSON object")
    if isinstance(doc.get("created_at"), str):
        try:  # RFC 3339, strictly: pydantic's strict mode wants a datetime object
            doc["created_at"] = datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError("wrong_type", f"field 'created_at': not RFC 3339: {exc}") from exc
        if doc["created_at"].tzinfo is None:
            raise InputError("wrong_type", "field 'created_at': RFC 3339 needs a UTC offset")
    try:
        event = UploadEvent.model_validate(doc)
    except ValidationError as exc:
        raise InputError(*_validation_reason(exc)) from exc
    _check_upload_id(event.upload_id)
    image = None
    if event.image_b64 is not None:
        try:
            image = base64.b64decode(event.image_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("invalid_base64", f"image_b64 is not valid base64: {exc}") from exc
    return Upload(upload_id=event.upload_id, image=image, image_url=event.image_url,
                  created_at=event.created_at, event=event)


class Verdict(NamedTuple):
    """One policy's outcome for one image (a tuple: decisions carry one per policy, and
    1,000-policy sets make thousands per batch)."""

    policy: str
    score: float
    threshold: float
    flagged: bool  # the policy matched (for a shadow policy too)
    top_prompt: str
    action: str = "flag"  # flag | shadow | review: only a flag match changes the decision


@dataclass(frozen=True, slots=True)
class Decision:
    """The value published to the decisions topic (key = upload_id). A plain dataclass
    serialised by hand: it is built once per upload on the hot path, with one verdict per
    policy (see the README's contract for the JSON)."""

    upload_id: str
    decision: Literal["allow", "flag"]
    flagged_policies: list[str]
    verdicts: Sequence[Verdict]
    policy_version: int
    model: str
    decided_at: datetime
    latency_ms: float
    shadow_flagged_policies: list[str] = field(default_factory=list)
    review_policies: list[str] = field(default_factory=list)  # also sent to the review topic

    @classmethod
    def build(cls, upload_id: str, verdicts: Sequence[Verdict], policy_version: int,
              model: str, started: datetime, now: datetime | None = None) -> Decision:
        now = now or datetime.now(UTC)
        matched: dict[str, list[str]] = {"flag": [], "shadow": [], "review": []}
        for v in verdicts:
            if v.flagged:
                matched[v.action].append(v.policy)
        flagged = matched["flag"]
        return cls(upload_id, "flag" if flagged else "allow", flagged, verdicts,
                   policy_version, model, now,
                   round((now - started).total_seconds() * 1000, 3), matched["shadow"],
                   matched["review"])

    def to_json(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id, "decision": self.decision,
            "flagged_policies": self.flagged_policies,
            "shadow_flagged_policies": self.shadow_flagged_policies,
            "review_policies": self.review_policies,
            "verdicts": [{"policy": p, "score": s, "threshold": t, "flagged": f,
                          "top_prompt": tp, "action": a} for p, s, t, f, tp, a in self.verdicts],
            "policy_version": self.policy_version, "model": self.model,
            "decided_at": self.decided_at.isoformat().replace("+00:00", "Z"),
            "latency_ms": self.latency_ms,
        }

    def to_bytes(self) -> bytes:
        return pydantic_core.to_json(self.to_json())  # ~3x json.dumps on 1,000 verdicts


def dead_letter_headers(original: Headers, error_type: str, message: str, topic: str,
                        partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The original headers plus the reason and the source coordinates."""
    return [
        *original,
        ("error-type", error_type.encode()),
        ("error-message", message[:1000].encode("utf-8", "replace")),
        ("source-topic", topic.encode()),
        ("source-partition", str(partition).encode()),
        ("source-offset", str(offset).encode()),
    ]
