"""The batch pipeline, run on the batch threads: fetch, validate, embed, score, decide.

Every job ends with a send (decision or dead letter), a settle (already decided), or back
in the queue to be processed alone. Nothing an upload contains can stop the worker: an
unexpected exception breaks the batch up, and an upload that raises alone is
dead-lettered as internal_error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation import faults
from moderation.config import Settings
from moderation.contract.errors import EncoderError, ImageError
from moderation.contract.events import Decision
from moderation.core.batching import decide
from moderation.core.images import inspect_image, thumbnail
from moderation.core.recent import RecentEntry
from moderation.edges.attempt_counter import Coordinates
from moderation.edges.encoders import Encoder, RejectedImage
from moderation.edges.fetch import Fetcher, FetchError
from moderation.edges.live_policies import ActivePolicies, LivePolicies
from moderation.edges.metrics import Metrics
from moderation.edges.policy_store import StoreError
from moderation.edges.recent_index import RecentSink
from moderation.edges.side_store import Availability
from moderation.worker.guard import PoisonGuard
from moderation.worker.jobs import Job, upload_ids
from moderation.worker.outbox import Outbox
from moderation.worker.triton_gate import TritonGate, error_kind

log = logging.getLogger(__name__)

Embedded = list[tuple[Job, NDArray[Any]]]


@dataclass(eq=False)
class BatchPipeline:
    settings: Settings
    encoder: Encoder
    policies: LivePolicies
    metrics: Metrics
    outbox: Outbox
    guard: PoisonGuard
    gate: TritonGate
    abandon: threading.Event  # set at shutdown: stop waiting, leave work uncommitted
    on_fatal: Callable[[BaseException], None]
    recent: RecentSink | None = None

    def __post_init__(self) -> None:
        self.fetcher = Fetcher(self.settings.fetch.policy())
        self._recent_health = Availability(
            log, self.metrics.recent_errors, "recent-uploads index unavailable, the console "
            "will miss these uploads", "recent-uploads index reachable again")
        self._fetch_pool = ThreadPoolExecutor(self.settings.fetch.concurrency,
                                              thread_name_prefix="fetch")

    def shutdown(self) -> None:
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)

    def process(self, jobs: list[Job], alone: bool) -> None:
        """One batch, on a batch thread (``alone``: a single job with nothing else in flight)."""
        done: set[Coordinates] = set()
        stage = ["validate"]  # the stage that raised, for the dead letter and the metric
        try:
            if alone and not self.gate.await_healthy():
                return  # abandoned (shutdown) while Triton was down
            jobs = self.guard.start(jobs, lambda job, message: self._reject(
                job, done, "poison_record", message))
            self._decide(jobs, done, alone, stage)
        except Exception as exc:
            rest = [j for j in jobs if j.coordinates not in done]
            if alone or len(rest) == 1:
                for job in rest:
                    self.outbox.job_error(job, stage[0], exc)
            elif rest:
                log.warning("batch of %d failed in %s (%s: %s); processing each upload alone",
                            len(rest), stage[0], type(exc).__name__, exc)
                self.guard.isolate(rest, "failed_batch")
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: not about an upload
            log.exception("batch of %d stopped by %s; stopping the worker uncommitted",
                          len(jobs), type(exc).__name__)
            self.on_fatal(exc)
        finally:
            if alone:
                self.guard.alone_running = False

    def _reject(self, job: Job, done: set[Coordinates], error_type: str, message: str) -> None:
        done.add(job.coordinates)
        self.outbox.reject(job, error_type, message)

    def _error(self, job: Job, done: set[Coordinates], stage: str, exc: Exception) -> None:
        done.add(job.coordinates)
        self.outbox.job_error(job, stage, exc)

    def _decide(self, jobs: list[Job], done: set[Coordinates], alone: bool,
                stage: list[str]) -> None:
        m = self.metrics
        stage[0] = "fetch"
        jobs = self._fetch_urls(jobs, done)
        stage[0] = "validate"
        t0 = time.perf_counter()
        valid = self._validate(jobs, done)
        t1 = time.perf_counter()
        m.stage_seconds.labels("validate").observe(t1 - t0)
        active = self._await_policies()
        if active is None:
            return
        valid = self.outbox.skip_already_decided(valid, active.version, done)
        if not valid:
            return
        stage[0] = "infer"
        t1 = time.perf_counter()
        embedded = self._embed(valid, done, alone)
        t2 = time.perf_counter()
        m.stage_seconds.labels("infer").observe(t2 - t1)
        if not embedded:
            return  # abandoned (shutdown), handed on to be processed alone, or all rejected
        m.batch_size.observe(len(embedded))
        stage[0] = "score"
        t3 = time.perf_counter()
        decisions = decide([(j.upload, j.started) for j, _ in embedded],
                           np.stack([e for _, e in embedded]), active.matrix, active.version,
                           active.model)
        t4 = time.perf_counter()
        m.stage_seconds.labels("score").observe(t4 - t3)
        stage[0] = "publish"
        for (job, _), decision in zip(embedded, decisions, strict=True):
            try:
                value = decision.to_bytes()
            except Exception as exc:
                self._error(job, done, "publish", exc)
                continue
            done.add(job.coordinates)
            self.outbox.decision(job, decision, value)
        m.stage_seconds.labels("publish").observe(time.perf_counter() - t4)
        self._remember(embedded, decisions)

    def _remember(self, embedded: Embedded, decisions: list[Decision]) -> None:
        """Leave the batch in the recent-uploads index (best effort: never fails a batch)."""
        if self.recent is None:
            return
        cfg = self.settings.recent
        entries = []
        for (job, emb), decision in zip(embedded, decisions, strict=True):
            thumb = None
            if cfg.thumbnails:
                # Triton decoded it, Pillow may not: then it is listed without a picture
                with contextlib.suppress(ImageError):
                    thumb = thumbnail(job.image or b"", cfg.thumbnail_px,
                                      self.settings.images.limits())
            entries.append((RecentEntry.of(decision, emb), thumb))
        try:
            self.recent.add(entries)
            self._recent_health.up()
        except StoreError as exc:
            self._recent_health.down(exc)

    def _fetch_urls(self, jobs: list[Job], done: set[Coordinates]) -> list[Job]:
        """Fetch the ``image_url`` uploads of a batch concurrently; failures dead-letter."""
        to_fetch = [j for j in jobs if j.image is None and j.upload.image_url]
        if not to_fetch:
            return jobs
        results = dict(zip((id(j) for j in to_fetch),
                           self._fetch_pool.map(self._fetch_one, to_fetch), strict=True))
        out = []
        for job in jobs:
            got = results.get(id(job), job.image)
            if isinstance(got, FetchError):
                self._reject(job, done, got.reason, str(got))
            elif isinstance(got, Exception):
                self._error(job, done, "fetch", got)
            else:
                out.append(replace(job, image=got))
        return out

    def _fetch_one(self, job: Job) -> bytes | Exception:
        try:
            return self.fetcher.fetch(job.upload.image_url or "")
        except Exception as exc:  # FetchError: a reason; anything else: internal_error
            return exc

    def _validate(self, jobs: list[Job], done: set[Coordinates]) -> list[Job]:
        valid = []
        limits = self.settings.images.limits()
        for job in jobs:
            try:
                if self.settings.faults.enabled:
                    faults.inject(job.image or b"", "worker")
                inspect_image(job.image or b"", limits)
                valid.append(job)
            except ImageError as exc:
                self._reject(job, done, exc.reason, str(exc))
            except Exception as exc:
                self._error(job, done, "validate", exc)
        return valid

    def _embed(self, jobs: list[Job], done: set[Coordinates], alone: bool) -> Embedded | None:
        """Embeddings for the jobs Triton accepts; rejected images are dead-lettered (found
        by bisection, so one bad image costs ~2 log2(batch) extra requests).

        A failed call is an outage or an upload that breaks Triton (a stub crash, a hang
        past the deadline): the two look alike. So: wait until a known-good image embeds
        again (an outage: retry with backoff, never give up on an upload), retry the batch
        once, and if it fails again process each upload alone. Alone, a failure counts as
        one more attempt for that upload, which becomes a poison_record after
        ``max_attempts``. None when abandoned or handed on."""
        failures = 0
        while not self.abandon.is_set():
            try:
                emb = self.encoder.embed_images([j.image or b"" for j in jobs])
            except RejectedImage as exc:
                self.metrics.triton_errors.labels("rejected").inc()
                if len(jobs) == 1:
                    self._reject(jobs[0], done, exc.reason, str(exc))
                    return []
                mid = len(jobs) // 2
                left = self._embed(jobs[:mid], done, alone)
                right = self._embed(jobs[mid:], done, alone)
                return None if left is None or right is None else left + right
            except EncoderError as exc:
                self.gate.failed(exc)
                failures += 1
                if alone or failures >= 2:
                    log.warning("Triton failed on %s (%s); %s: %s",
                                upload_ids(jobs), error_kind(exc),
                                "will retry it alone, counting an attempt"
                                if alone else "processing each upload alone", exc)
                    if not self.gate.await_healthy():
                        return None
                    done.update(j.coordinates for j in jobs)
                    self.guard.isolate(jobs, "failed_batch")
                    return None
                if not self.gate.await_healthy(first_error=exc):
                    return None
                continue
            self.gate.succeeded()
            return list(zip(jobs, emb, strict=True))
        return None

    def _await_policies(self) -> ActivePolicies | None:
        while not self.abandon.is_set():
            active = self.policies.active or self.policies.wait_loaded(0.5)
            if active is not None:
                return active
        return None
