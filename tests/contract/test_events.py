"""Upload event parsing, decisions and dead-letter headers (pure logic)."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from moderation.contract.events import (
    Decision,
    InputError,
    Verdict,
    dead_letter_headers,
    parse_upload,
)

PNG = b"\x89PNG\r\n\x1a\nfake"


def event(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_json_event_with_base64_image() -> None:
    up = parse_upload(event(upload_id="u-1", image_b64=base64.b64encode(PNG).decode(),
                            user_id="x", surface="avatar", metadata={"a": 1},
                            created_at="2026-11-27T10:00:00Z"))
    assert up.upload_id == "u-1" and up.image == PNG and up.image_url is None
    assert up.created_at == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert up.event is not None and up.event.metadata == {"a": 1}


def test_json_event_with_url() -> None:
    up = parse_upload(event(upload_id="u-2", image_url="https://img.example/a.jpg"))
    assert up.image is None and up.image_url == "https://img.example/a.jpg"


def test_raw_image_with_header() -> None:
    up = parse_upload(PNG, [("upload-id", b"u-3"), ("other", b"x")])
    assert up.upload_id == "u-3" and up.image == PNG


@pytest.mark.parametrize("value,headers,reason", [
    (b"", [], "empty_message"),
    (None, [], "empty_message"),
    (PNG, [], "missing_upload_id"),
    (PNG, [("upload-id", b"\xff\xfe")], "invalid_upload_id"),
    (b"{not json", [], "invalid_json"),
    (b"{}", [], "missing_field"),
    (event(image_b64="AAAA"), [], "missing_field"),
    (event(upload_id="u"), [], "missing_field"),
    (event(upload_id="u", image_b64="AAAA", image_url="http://x"), [], "missing_field"),
    (event(upload_id=5, image_b64="AAAA"), [], "wrong_type"),
    (event(upload_id="u", image_b64=["x"]), [], "wrong_type"),
    (event(upload_id="u", image_b64="AAAA", metadata="x"), [], "wrong_type"),
    (event(upload_id="u", image_b64="AAAA", created_at="yesterday"), [], "wrong_type"),
    (event(upload_id="u", image_b64="AAAA", created_at="2026-01-01T00:00:00"), [], "wrong_type"),
    (event(upload_id="u", image_b64="AAAA", colour="red"), [], "unknown_field"),
    (event(upload_id="u", image_b64="not base64!"), [], "invalid_base64"),
    (event(upload_id="bad\nid", image_b64="AAAA"), [], "invalid_upload_id"),
    (event(upload_id="x" * 10_000, image_b64="AAAA"), [], "invalid_upload_id"),
    (event(upload_id="", image_b64="AAAA"), [], "invalid_upload_id"),
    (b"[1, 2]", [], "invalid_json"),
])
def test_bad_input_reasons(value: bytes | None, headers: list[tuple[str, bytes]],
                           reason: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_upload(value, headers)
    assert exc.value.reason == reason
    assert len(str(exc.value)) < 500  # a 10 KB upload_id is not echoed back whole


def test_oversized_message() -> None:
    with pytest.raises(InputError) as exc:
        parse_upload(b"{" + b" " * 100, max_bytes=50)
    assert exc.value.reason == "message_too_large"


def test_decision_json_contract() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    verdicts = [Verdict("weapons", 0.61, 0.41, True, "a pistol or handgun"),
                Verdict("alcohol", 0.12, 0.39, False, "a glass of beer")]
    d = Decision.build("u-1", verdicts, policy_version=7, model="clip_image:demo",
                       started=started, now=started + timedelta(milliseconds=42))
    doc = json.loads(d.to_bytes())
    assert set(doc) == {"upload_id", "decision", "flagged_policies",
                        "shadow_flagged_policies", "review_policies", "verdicts",
                        "policy_version", "model", "decided_at", "latency_ms"}
    assert doc["decision"] == "flag" and doc["flagged_policies"] == ["weapons"]
    assert doc["latency_ms"] == 42.0 and doc["policy_version"] == 7
    assert set(doc["verdicts"][0]) == {"policy", "score", "threshold", "flagged", "top_prompt",
                                       "action"}
    assert doc["verdicts"][0]["action"] == "flag" and doc["shadow_flagged_policies"] == []
    allow = Decision.build("u-2", verdicts[1:], 7, "m", started)
    assert allow.decision == "allow" and allow.flagged_policies == []


def test_a_matching_shadow_policy_is_reported_but_never_flags() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    shadow = Verdict("syringes", 0.7, 0.4, True, "a syringe", "shadow")
    quiet = Verdict("alcohol", 0.12, 0.39, False, "a glass of beer")
    d = Decision.build("u-3", [shadow, quiet], 8, "m", started)
    assert d.decision == "allow" and d.flagged_policies == []
    assert d.shadow_flagged_policies == ["syringes"]
    doc = json.loads(d.to_bytes())
    assert doc["verdicts"][0] == {"policy": "syringes", "score": 0.7, "threshold": 0.4,
                                  "flagged": True, "top_prompt": "a syringe",
                                  "action": "shadow"}
    both = Decision.build("u-4", [shadow, Verdict("weapons", 0.6, 0.4, True, "a gun")], 8,
                          "m", started)
    assert both.decision == "flag" and both.flagged_policies == ["weapons"]
    assert both.shadow_flagged_policies == ["syringes"]


def test_a_matching_review_policy_is_listed_for_review_and_never_flags() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    review = Verdict("borderline", 0.5, 0.4, True, "a fight", "review")
    d = Decision.build("u-5", [review, Verdict("weapons", 0.2, 0.4, False, "a gun")], 8, "m",
                       started)
    assert d.decision == "allow" and d.review_policies == ["borderline"]
    assert json.loads(d.to_bytes())["review_policies"] == ["borderline"]
    quiet = Decision.build("u-6", [review._replace(flagged=False)], 8, "m", started)
    assert quiet.review_policies == []


def test_dead_letter_headers_keep_the_original() -> None:
    h = dead_letter_headers([("trace", b"t1")], "invalid_json", "bad", "uploads", 3, 99)
    assert h[0] == ("trace", b"t1")
    assert dict(h[1:]) == {"error-type": b"invalid_json", "error-message": b"bad",
                           "source-topic": b"uploads", "source-partition": b"3",
                           "source-offset": b"99"}
