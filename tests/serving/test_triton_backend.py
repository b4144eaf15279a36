"""Pure helpers of the Triton python-backend models."""

import pytest

from moderation.serving.triton_backend import SMALL_TOWER_PARAMS, serving_threads


@pytest.mark.parametrize("setting,params,threads", [
    ("auto", 1_200_000, 1),                   # the demo CNN: one thread, cores for decoding
    ("auto", 88_000_000, None),               # ViT-B/32's tower: torch's default, all cores
    ("auto", SMALL_TOWER_PARAMS, None),
    ("0", 1_200_000, None), ("", 5, None),    # 0 / unset: leave torch alone
    ("3", 88_000_000, 3),                     # a number pins it
])
def test_serving_threads(setting: str, params: int, threads: int | None) -> None:
    assert serving_threads(setting, params) == threads
