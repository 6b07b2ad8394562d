"""Procedurally rendered vehicles in VeRi-776's exact on-disk layout.

Why: the whole pipeline (loader, sampler, training, distillation, FAISS evaluation) must run on a
fresh machine with no download, on a task hard enough that a small student trails a large
teacher. The data is written exactly as VeRi-776 ships (`image_train/`, `image_query/`,
`image_test/`, `name_*.txt`, files `VVVV_cCCC_FFFFFFFF_0.jpg`) so the real loader reads it.

What makes the task non-trivial:
- an identity fixes body type and proportions, paint colour from a small shared palette (many
  identities share a colour), and small marks (stickers, stripe, roof rack, rim colour, tint), so
  colour alone does not identify a vehicle and fine detail matters;
- a camera fixes the viewpoint (left, right, front or rear), lighting, background and blur, so a
  query must be matched across views and conditions;
- every image adds pose jitter, partial occlusion, crop noise and sensor noise.

Everything is a function of the seed: the same parameters give byte-identical files.

Concurrency: `<root>.lock` beside the folder is flock'ed shared by every process that reads the
data (from `ensure` until it exits) and exclusively while one writes it, so concurrent first runs
generate it once, and `reidkd data synth` never replaces data a running job reads (DataInUseError).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from reid_kd.errors import ConfigError, UserError
from reid_kd.utils.lock import CAN_LOCK, DATA_MUTEX, DataLock, data_lock_file
from reid_kd.utils.logs import EVERY_RANK

logger = logging.getLogger(__name__)

PALETTE = {  # BGR; ten paints shared by all identities
    "white": (235, 235, 235), "black": (35, 35, 35), "silver": (180, 180, 175),
    "grey": (110, 110, 110), "red": (40, 40, 200), "blue": (170, 80, 30),
    "green": (60, 140, 50), "yellow": (40, 200, 230), "brown": (40, 75, 120),
    "orange": (30, 130, 240),
}
BODY_TYPES = ("sedan", "suv", "hatchback", "van", "truck")
VIEWS = ("left", "right", "front", "rear")


@dataclass(frozen=True)
class SynthSpec:
    """Size of the generated dataset; stored beside the data to tell whether it is current."""

    train_ids: int = 200
    test_ids: int = 100
    cameras: int = 8
    images_per_id: int = 12
    image_size: int = 128
    seed: int = 0


def seeded_rng(*keys: int) -> np.random.Generator:
    """A generator of its own for every key tuple, so one drawing never shifts another's stream."""
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def _identity(seed: int, vid: int) -> dict:
    r = seeded_rng(seed, 1, vid)
    body = BODY_TYPES[r.integers(len(BODY_TYPES))]
    base = {"sedan": (0.86, 0.26, 0.45), "suv": (0.80, 0.36, 0.55), "hatchback": (0.70, 0.30, 0.55),
            "van": (0.86, 0.44, 0.80), "truck": (0.90, 0.34, 0.35)}[body]
    colour_name = list(PALETTE)[r.integers(len(PALETTE))]
    colour = np.clip(np.array(PALETTE[colour_name]) + r.normal(0, 8, 3), 0, 255)
    marks = []
    for _ in range(r.integers(1, 4)):
        marks.append({"x": r.uniform(0.1, 0.85), "y": r.uniform(0.15, 0.75), "w": r.uniform(0.05, 0.14),
                      "h": r.uniform(0.05, 0.16), "colour": tuple(int(c) for c in r.integers(0, 256, 3)),
                      "round": bool(r.random() < 0.4)})
    return {
        "body": body, "colour": tuple(float(c) for c in colour),
        "length": base[0] + r.uniform(-0.05, 0.05), "height": base[1] + r.uniform(-0.04, 0.04),
        "cabin": base[2] + r.uniform(-0.08, 0.08), "cabin_offset": r.uniform(0.1, 0.3),
        "marks": marks, "stripe": bool(r.random() < 0.35),
        "stripe_colour": tuple(int(c) for c in r.integers(0, 256, 3)),
        "roof_rack": bool(r.random() < 0.3), "rim": tuple(int(c) for c in r.integers(60, 256, 3)),
        "tint": tuple(int(c) for c in r.integers(20, 120, 3)),
        "lamp": tuple(int(c) for c in r.integers(150, 256, 3)),
    }


def _camera(seed: int, cam: int) -> dict:
    r = seeded_rng(seed, 2, cam)
    return {
        "view": VIEWS[cam % len(VIEWS)] if cam < 2 * len(VIEWS) else VIEWS[r.integers(len(VIEWS))],
        "gain": r.uniform(0.65, 1.25), "tint": r.uniform(0.85, 1.15, 3), "gamma": r.uniform(0.8, 1.25),
        "bg": tuple(int(c) for c in r.integers(40, 200, 3)), "bg2": tuple(int(c) for c in r.integers(40, 200, 3)),
        "bg_stripes": int(r.integers(0, 6)), "horizon": r.uniform(0.2, 0.6),
        "blur": r.uniform(0.0, 1.4), "scale": r.uniform(0.75, 0.95), "noise": r.uniform(2, 8),
    }


def _poly(img: np.ndarray, pts, colour) -> None:
    cv2.fillPoly(img, [np.round(np.asarray(pts)).astype(np.int32)], colour, lineType=cv2.LINE_AA)


def _draw_side(img, ident, box) -> None:
    x0, y0, w, h = box
    body_top = y0 + h * (1 - ident["height"] * 1.6)
    body_bottom = y0 + h * 0.82
    length = w
    _poly(img, [(x0, body_bottom), (x0, body_top + 0.15 * h), (x0 + 0.04 * length, body_top),
                (x0 + length, body_top), (x0 + length, body_bottom)], ident["colour"])
    cab_x = x0 + length * ident["cabin_offset"]
    cab_w = length * ident["cabin"]
    cab_top = body_top - h * 0.28
    _poly(img, [(cab_x, body_top), (cab_x + 0.15 * cab_w, cab_top), (cab_x + cab_w, cab_top),
                (cab_x + cab_w + 0.12 * cab_w, body_top)], ident["colour"])
    _poly(img, [(cab_x + 0.08 * cab_w, body_top - 2), (cab_x + 0.2 * cab_w, cab_top + 0.05 * h),
                (cab_x + 0.95 * cab_w, cab_top + 0.05 * h), (cab_x + 1.02 * cab_w, body_top - 2)], ident["tint"])
    if ident["roof_rack"]:
        cv2.rectangle(img, (int(cab_x + 0.15 * cab_w), int(cab_top - 0.06 * h)),
                      (int(cab_x + cab_w), int(cab_top - 0.01 * h)), (30, 30, 30), -1, cv2.LINE_AA)
    if ident["stripe"]:
        ys = int(body_top + 0.45 * (body_bottom - body_top))
        cv2.line(img, (int(x0 + 2), ys), (int(x0 + length - 2), ys), ident["stripe_colour"],
                 max(1, int(0.035 * h)), cv2.LINE_AA)
    for m in ident["marks"]:
        cx, cy = x0 + m["x"] * length, body_top + m["y"] * (body_bottom - body_top)
        mw, mh = m["w"] * length, m["h"] * h
        if m["round"]:
            cv2.ellipse(img, (int(cx), int(cy)), (max(1, int(mw / 2)), max(1, int(mh / 2))), 0, 0, 360,
                        m["colour"], -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (int(cx - mw / 2), int(cy - mh / 2)), (int(cx + mw / 2), int(cy + mh / 2)),
                          m["colour"], -1, cv2.LINE_AA)
    radius = max(2, int(0.11 * h))
    for fx in (0.2, 0.8):
        c = (int(x0 + fx * length), int(body_bottom))
        cv2.circle(img, c, radius, (20, 20, 20), -1, cv2.LINE_AA)
        cv2.circle(img, c, max(1, radius // 2), ident["rim"], -1, cv2.LINE_AA)


def _draw_end(img, ident, box, rear: bool) -> None:
    x0, y0, w, h = box
    width = w * (0.55 + 0.35 * ident["height"])
    x0 = x0 + (w - width) / 2
    body_top = y0 + h * (1 - ident["height"] * 1.8)
    body_bottom = y0 + h * 0.85
    cab_top = body_top - h * 0.3
    inset = width * (0.18 - 0.1 * ident["cabin"])
    _poly(img, [(x0, body_bottom), (x0, body_top), (x0 + width, body_top), (x0 + width, body_bottom)],
          ident["colour"])
    _poly(img, [(x0 + 0.04 * width, body_top), (x0 + inset, cab_top), (x0 + width - inset, cab_top),
                (x0 + 0.96 * width, body_top)], ident["colour"])
    _poly(img, [(x0 + 0.1 * width, body_top - 1), (x0 + inset + 0.04 * width, cab_top + 0.05 * h),
                (x0 + width - inset - 0.04 * width, cab_top + 0.05 * h), (x0 + 0.9 * width, body_top - 1)],
          ident["tint"])
    lamp = (40, 40, 220) if rear else ident["lamp"]
    ly = int(body_top + 0.25 * (body_bottom - body_top))
    lw, lh = int(0.16 * width), max(2, int(0.07 * h))
    for lx in (x0 + 0.06 * width, x0 + 0.94 * width - lw):
        cv2.rectangle(img, (int(lx), ly), (int(lx) + lw, ly + lh), lamp, -1, cv2.LINE_AA)
    px, py = int(x0 + 0.38 * width), int(body_top + 0.6 * (body_bottom - body_top))
    cv2.rectangle(img, (px, py), (px + int(0.24 * width), py + max(2, int(0.08 * h))), (225, 225, 225), -1)
    if ident["roof_rack"]:
        cv2.rectangle(img, (int(x0 + inset), int(cab_top - 0.06 * h)), (int(x0 + width - inset), int(cab_top)),
                      (30, 30, 30), -1, cv2.LINE_AA)
    if ident["stripe"]:
        sx = int(x0 + width / 2)
        cv2.line(img, (sx, int(body_top)), (sx, int(body_bottom)), ident["stripe_colour"],
                 max(1, int(0.05 * width)), cv2.LINE_AA)
    m = ident["marks"][0]  # the first mark is visible from every side, as a windscreen or bumper sticker
    mx = x0 + m["x"] * width
    my = body_top + (0.15 if rear else 0.75) * (body_bottom - body_top)
    s = max(2, int(m["w"] * width))
    cv2.rectangle(img, (int(mx - s / 2), int(my - s / 2)), (int(mx + s / 2), int(my + s / 2)), m["colour"], -1)


def background(cam: dict, height: int, width: int) -> np.ndarray:
    """A camera's scene: two-tone ground and sky with its road markings."""
    img = np.empty((height, width, 3), np.uint8)
    horizon = int(height * cam["horizon"])
    img[:horizon] = cam["bg"]
    img[horizon:] = cam["bg2"]
    for i in range(cam["bg_stripes"]):
        y = horizon + int((i + 1) * (height - horizon) / (cam["bg_stripes"] + 1))
        cv2.line(img, (0, y), (width, y + height // 6), (200, 200, 200), 1, cv2.LINE_AA)
    return img


def render(ident: dict, cam: dict, rng: np.random.Generator, size: int) -> np.ndarray:
    """One BGR image of a vehicle seen by a camera, with per-image jitter, occlusion and noise."""
    img = background(cam, size, size)
    scale = cam["scale"] * rng.uniform(0.9, 1.08)
    w = h = size * scale
    box = ((size - w) / 2 + rng.normal(0, 0.03) * size, (size - h) / 2 + rng.normal(0, 0.03) * size, w, h)
    if cam["view"] in ("left", "right"):
        _draw_side(img, ident, box)
        if cam["view"] == "right":
            img = np.ascontiguousarray(img[:, ::-1])
    else:
        _draw_end(img, ident, box, rear=cam["view"] == "rear")
    return camera_effects(img, cam, rng)


def camera_effects(img: np.ndarray, cam: dict, rng: np.random.Generator) -> np.ndarray:
    """Per-image pose jitter, partial occlusion and crop noise, then the camera's light, noise and blur."""
    height, width = img.shape[:2]
    size = min(height, width)
    angle = rng.normal(0, 4)
    m = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    m[:, 2] += rng.normal(0, 0.03 * size, 2)
    img = cv2.warpAffine(img, m, (width, height), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.35:  # partial occlusion: a pole, a sign or another object's edge
        ow, oh = int(rng.uniform(0.08, 0.3) * width), int(rng.uniform(0.2, 0.7) * height)
        ox, oy = int(rng.uniform(0, width - ow)), int(rng.uniform(0, height - oh))
        cv2.rectangle(img, (ox, oy), (ox + ow, oy + oh), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    left, top, right, bottom = rng.integers(0, int(0.08 * size) + 1, 4)  # crop noise: a loose or tight box
    img = cv2.resize(img[top:height - bottom, left:width - right], (width, height))
    light = img.astype(np.float32) / 255.0
    light = np.power(light, cam["gamma"]) * cam["gain"] * cam["tint"] * rng.uniform(0.9, 1.1)
    light = light * 255.0 + rng.normal(0, cam["noise"], light.shape)
    img = np.clip(light, 0, 255).astype(np.uint8)
    if cam["blur"] > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), cam["blur"])
    return img


def _plan(spec: SynthSpec, vid: int) -> list[int]:
    """Camera of each image of one identity: at least two cameras, so queries always have a match."""
    r = seeded_rng(spec.seed, 3, vid)
    n_cams = int(r.integers(2, max(3, min(spec.cameras, 6) + 1)))
    cams = sorted(r.choice(spec.cameras, size=min(n_cams, spec.cameras), replace=False).tolist())
    assert len(cams) >= 2, "the synthetic dataset needs at least two cameras"
    per_image = [cams[i % len(cams)] for i in range(spec.images_per_id)]
    return sorted(per_image)


@dataclass(frozen=True)
class Kind:
    """What a synthetic dataset draws and how it lays its files out (vehicles in VeRi's layout here,
    persons in Market-1501's in `synth_person`); identities, cameras and splits are shared."""

    label: str
    identity: Callable[[int, int], dict]  # (seed, id) -> identity description
    render: Callable[[dict, dict, np.random.Generator, int], np.ndarray]  # (identity, camera, rng, size)
    folders: tuple[str, str, str]  # train, query, gallery
    file_name: Callable[[int, int, int, int], str]  # (id, 0-based camera, frame, image index) -> name
    name_lists: bool  # write VeRi's name_train.txt, name_query.txt, name_test.txt
    max_cameras: int = 999


VEHICLES = Kind("VeRi", _identity, render, ("image_train", "image_query", "image_test"),
                lambda vid, cam, frame, _: f"{vid:04d}_c{cam + 1:03d}_{frame:08d}_0.jpg", name_lists=True)


class DataInUseError(UserError, RuntimeError):
    """The dataset folder would be replaced while a running job reads it."""


_RETRIES = 15  # ~1.5 s: other processes hold the shared lock for milliseconds while checking the spec


def _in_use(root: Path, fix: str) -> DataInUseError:
    return DataInUseError(f"{root} is in use by a running job (it holds {data_lock_file(root)}); {fix}")


def _current(root: Path, spec: SynthSpec) -> bool:
    try:
        return json.loads((root / "synth_spec.json").read_text()) == asdict(spec)
    except (OSError, ValueError):
        return False


def _check(spec: SynthSpec, kind: Kind) -> None:
    if spec.cameras > kind.max_cameras:
        raise ConfigError(f"config key 'data.synth.cameras': synthetic {kind.label} names cameras with at most "
                          f"{kind.max_cameras} values, got {spec.cameras}")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def generate(root: str | Path, spec: SynthSpec = SynthSpec(), *, kind: Kind = VEHICLES) -> Path:
    """Write the dataset under `root`, replacing what is there unless a running job reads it
    (DataInUseError: the exclusive lock on `<root>.lock` is taken without waiting)."""
    _check(spec, kind)
    root = Path(root)
    if not CAN_LOCK:  # Windows: no locks, the unguarded check-and-generate
        return _write(root, spec, kind)
    with DATA_MUTEX:
        lock = DataLock(root)
        for _ in range(_RETRIES):
            if lock.try_exclusive():
                break
            time.sleep(random.uniform(0.05, 0.15))
        else:
            if lock.reading:
                lock.share()  # the failed conversion dropped this process's own read lock
            else:
                lock.close()
            raise _in_use(root, "generate into another folder with --root DIR, or wait for the job to end")
        try:
            return _write(root, spec, kind)
        finally:
            if lock.reading:
                lock.share()  # this process still reads it (now the new data)
            else:
                lock.close()


def _write(root: Path, spec: SynthSpec, kind: Kind) -> Path:
    """Render into `<root>.partial-<pid>`, then swap it in; the caller holds the exclusive lock."""
    for stale in root.parent.glob(glob.escape(root.name) + ".*"):  # left by killed processes
        if stale.name.startswith((root.name + ".partial", root.name + ".old-")):
            _remove(stale)
    tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
    try:
        names = _render_all(tmp, spec, kind)
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        if root.exists() or root.is_symlink():
            root.rename(old)
        try:
            tmp.rename(root)
        except BaseException:
            if old.exists() or old.is_symlink():
                old.rename(root)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove(old)
    logger.info(f"synthetic {kind.label} written to {root}: {len(names['train'])} train, "
                f"{len(names['query'])} query, {len(names['test'])} gallery images", extra=EVERY_RANK)
    return root


def _render_all(tmp: Path, spec: SynthSpec, kind: Kind) -> dict[str, list[str]]:
    train_dir, query_dir, test_dir = kind.folders
    for sub in kind.folders:
        (tmp / sub).mkdir(parents=True)
    cams = [_camera(spec.seed, c) for c in range(spec.cameras)]
    names: dict[str, list[str]] = {"train": [], "query": [], "test": []}
    all_ids = seeded_rng(spec.seed, 4).permutation(np.arange(1, 10 * (spec.train_ids + spec.test_ids) + 1))
    vids = sorted(all_ids[: spec.train_ids + spec.test_ids].tolist())
    order = seeded_rng(spec.seed, 5).permutation(len(vids))
    train_vids = sorted(vids[i] for i in order[: spec.train_ids])
    test_vids = sorted(vids[i] for i in order[spec.train_ids:])
    for split, split_vids in (("train", train_vids), ("test", test_vids)):
        for vid in split_vids:
            ident = kind.identity(spec.seed, vid)
            rng = seeded_rng(spec.seed, 6, vid)
            queried: set[int] = set()
            for i, cam in enumerate(_plan(spec, vid)):
                frame = int(rng.integers(0, 10**8))
                name = kind.file_name(vid, cam, frame, i)
                img = kind.render(ident, cams[cam], seeded_rng(spec.seed, 7, vid, i), spec.image_size)
                folder = train_dir if split == "train" else test_dir
                cv2.imwrite(str(tmp / folder / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
                names[split].append(name)
                if split == "test" and cam not in queried:  # one query per identity and camera, as VeRi
                    queried.add(cam)
                    shutil.copyfile(tmp / folder / name, tmp / query_dir / name)
                    names["query"].append(name)
    if kind.name_lists:
        for split, listed in names.items():
            (tmp / f"name_{split}.txt").write_text("".join(n + "\n" for n in listed))
    (tmp / "synth_spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return names


def ensure(root: str | Path, spec: SynthSpec, *, kind: Kind = VEHICLES) -> Path:
    """Generate the dataset unless `root` already holds one made from the same spec, then keep a
    shared lock on `<root>.lock` for the rest of the process: while it reads the data, no other
    process replaces it. Concurrent first runs generate it once; the others wait for it."""
    _check(spec, kind)
    root = Path(root)
    if not CAN_LOCK:  # Windows: no locks, the unguarded check-and-generate
        return root if _current(root, spec) else _write(root, spec, kind)
    with DATA_MUTEX:
        lock = DataLock(root)
        lock.keep()
        refused = 0
        while refused < _RETRIES:
            lock.share(f"waiting for another process generating {root}")
            if _current(root, spec):
                return root
            if lock.try_exclusive():
                try:
                    if not _current(root, spec):  # another process may have written it meanwhile
                        _write(root, spec, kind)
                finally:
                    lock.share()  # downgrade: this process reads it from now on
                continue  # the downgrade is not atomic: check again under the shared lock
            refused += 1  # others hold it shared: running jobs, or processes checking the spec right now
            time.sleep(random.uniform(0.05, 0.15))
        lock.close()
        raise _in_use(root, "use another data.root, or wait for the job to end")
