"""Procedurally rendered pedestrians in Market-1501's on-disk layout (`synth_market`).

The person counterpart of `reid_kd.data.synth`: the same identities, cameras, splits and
per-image camera effects (pose jitter, occlusion, crop noise, light, noise, blur), drawn as
figures on a 2:1 (height:width) canvas and written as Market-1501 ships them
(`bounding_box_train/`, `query/`, `bounding_box_test/`, files `PPPP_cCsS_FFFFFF_BB.jpg`), so the
real Market loader reads them.

What an identity fixes: clothing colours (top, trousers or shorts, shoes) from a shared palette,
a pattern on the top (plain, stripes, checks or a chest logo), a bag (none, backpack, shoulder
bag, handbag) and its colour, hair and skin tone, height and build. A camera fixes the view
(front, back, left or right side) and the scene; each image adds a walking pose (stride and arm
swing). Many identities share a top colour, so patterns, bags and lower clothing matter.

Everything is a function of the seed, as for the vehicles. Cameras are written as one digit,
as in Market-1501, so at most 9 cameras.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reid_kd.data import synth
from reid_kd.data.synth import PALETTE, SynthSpec, seeded_rng

PATTERNS = ("plain", "stripes", "checks", "logo")
BAGS = ("none", "backpack", "shoulder", "handbag")
SKIN = ((80, 110, 160), (110, 150, 200), (140, 180, 225), (60, 80, 110))
HAIR = ((20, 20, 20), (30, 50, 80), (60, 90, 140), (150, 150, 150))


def person_identity(seed: int, pid: int) -> dict:
    r = seeded_rng(seed, 11, pid)

    def paint() -> tuple[float, ...]:
        base = np.array(PALETTE[list(PALETTE)[r.integers(len(PALETTE))]])
        return tuple(float(c) for c in np.clip(base + r.normal(0, 8, 3), 0, 255))

    return {
        "top": paint(), "bottom": paint(), "shoes": paint(), "bag_colour": paint(),
        "pattern": PATTERNS[r.integers(len(PATTERNS))],
        "pattern_colour": tuple(int(c) for c in r.integers(0, 256, 3)),
        "bag": BAGS[r.integers(len(BAGS))], "shorts": bool(r.random() < 0.25),
        "long_sleeves": bool(r.random() < 0.6), "long_hair": bool(r.random() < 0.35),
        "skin": SKIN[r.integers(len(SKIN))], "hair": HAIR[r.integers(len(HAIR))],
        "height": r.uniform(0.85, 1.0), "build": r.uniform(0.8, 1.2),
    }


def _limb(img, a, b, colour, width) -> None:
    cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colour, max(1, int(width)), cv2.LINE_AA)


def _pattern(img, ident, x0, y0, x1, y1, front: bool) -> None:
    w, h = x1 - x0, y1 - y0
    colour, thick = ident["pattern_colour"], max(1, int(0.08 * h))
    if ident["pattern"] == "stripes":
        for k in range(1, 4):
            y = int(y0 + k * h / 4)
            cv2.line(img, (int(x0), y), (int(x1), y), colour, thick, cv2.LINE_AA)
    elif ident["pattern"] == "checks":
        for k in range(1, 3):
            x = int(x0 + k * w / 3)
            cv2.line(img, (x, int(y0)), (x, int(y1)), colour, thick, cv2.LINE_AA)
            y = int(y0 + k * h / 3)
            cv2.line(img, (int(x0), y), (int(x1), y), colour, thick, cv2.LINE_AA)
    elif ident["pattern"] == "logo" and front:
        s = 0.3 * w
        cx, cy = x0 + w / 2, y0 + 0.35 * h
        cv2.rectangle(img, (int(cx - s / 2), int(cy - s / 2)), (int(cx + s / 2), int(cy + s / 2)), colour, -1)


def render_person(ident: dict, cam: dict, rng: np.random.Generator, size: int) -> np.ndarray:
    """One BGR image (size x size/2) of a pedestrian seen by a camera, mid-stride."""
    height, width = size, max(8, size // 2)
    img = synth.background(cam, height, width)
    view = {"rear": "back"}.get(cam["view"], cam["view"])
    side = view in ("left", "right")
    ph = height * cam["scale"] * ident["height"] * rng.uniform(0.92, 1.05)
    unit = ph / 8  # one head height
    cx = width / 2 + rng.normal(0, 0.04) * width
    top = (height - ph) / 2 + rng.normal(0, 0.02) * height
    body_w = min(0.9 * width, unit * 2.1 * ident["build"] * (0.6 if side else 1.0))
    stride, swing = rng.uniform(-1, 1), rng.uniform(-1, 1)
    shoulder_y, hip_y, foot_y = top + 1.2 * unit, top + 4.1 * unit, top + 7.7 * unit
    x0, x1 = cx - body_w / 2, cx + body_w / 2
    limb_w = max(2.0, 0.32 * unit * ident["build"])

    if ident["bag"] == "backpack" and view != "front":  # behind the body from the back and sides
        bx0 = x0 + 0.1 * body_w if view == "back" else (x1 - 0.2 * body_w if view == "left" else x0 - 0.5 * body_w)
        bw = 0.8 * body_w if view == "back" else 0.7 * body_w
        cv2.rectangle(img, (int(bx0), int(shoulder_y + 0.2 * unit)), (int(bx0 + bw), int(shoulder_y + 2.4 * unit)),
                      ident["bag_colour"], -1, cv2.LINE_AA)
    for sign in (-1, 1):  # legs, the far one first
        hip = (cx + sign * body_w * (0.05 if side else 0.22), hip_y)
        foot = (hip[0] + sign * stride * unit * (1.2 if side else 0.3), foot_y)
        knee = ((hip[0] + foot[0]) / 2, (hip_y + foot_y) / 2)
        _limb(img, hip, knee, ident["bottom"], limb_w * 1.2)
        _limb(img, knee, foot, ident["skin"] if ident["shorts"] else ident["bottom"], limb_w * 1.1)
        cv2.ellipse(img, (int(foot[0]), int(foot_y)), (max(1, int(limb_w)), max(1, int(0.4 * limb_w))), 0, 0, 360,
                    ident["shoes"], -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(x0), int(shoulder_y)), (int(x1), int(hip_y)), ident["top"], -1, cv2.LINE_AA)
    _pattern(img, ident, x0, shoulder_y, x1, hip_y, front=view == "front")
    for sign in (-1, 1):  # arms swing against the legs
        shoulder = (cx + sign * body_w * (0.1 if side else 0.55), shoulder_y + 0.2 * unit)
        hand = (shoulder[0] - sign * swing * unit * (1.0 if side else 0.25), shoulder_y + 3.0 * unit)
        elbow = ((shoulder[0] + hand[0]) / 2, (shoulder[1] + hand[1]) / 2)
        _limb(img, shoulder, elbow, ident["top"], limb_w)
        _limb(img, elbow, hand, ident["top"] if ident["long_sleeves"] else ident["skin"], limb_w * 0.9)
        if ident["bag"] == "handbag" and sign == 1:
            s = 0.7 * unit
            cv2.rectangle(img, (int(hand[0] - s / 2), int(hand[1])), (int(hand[0] + s / 2), int(hand[1] + s)),
                          ident["bag_colour"], -1, cv2.LINE_AA)
    if ident["bag"] == "shoulder":  # strap across the chest, bag at the hip
        _limb(img, (x0, shoulder_y), (x1, hip_y - 0.6 * unit), ident["bag_colour"], max(1, 0.15 * unit))
        cv2.rectangle(img, (int(x1 - 0.3 * body_w), int(hip_y - 0.8 * unit)), (int(x1 + 0.2 * body_w), int(hip_y)),
                      ident["bag_colour"], -1, cv2.LINE_AA)
    elif ident["bag"] == "backpack" and view == "front":  # only the straps show
        for fx in (0.25, 0.75):
            _limb(img, (x0 + fx * body_w, shoulder_y), (x0 + fx * body_w, shoulder_y + 2 * unit),
                  ident["bag_colour"], max(1, 0.15 * unit))
    head = (int(cx), int(top + 0.6 * unit))
    radius = max(2, int(0.5 * unit))
    cv2.circle(img, head, radius, ident["skin"] if view != "back" else ident["hair"], -1, cv2.LINE_AA)
    cv2.ellipse(img, head, (radius, radius), 0, 180, 360, ident["hair"], -1, cv2.LINE_AA)  # hair on top
    if ident["long_hair"] and view != "front":
        cv2.rectangle(img, (int(cx - radius), head[1]), (int(cx + radius), int(head[1] + 1.2 * unit)),
                      ident["hair"], -1, cv2.LINE_AA)
    if view == "right":
        img = np.ascontiguousarray(img[:, ::-1])
    return synth.camera_effects(img, cam, rng)


PERSONS = synth.Kind(
    "Market-1501", person_identity, render_person, ("bounding_box_train", "query", "bounding_box_test"),
    lambda pid, cam, frame, i: f"{pid:04d}_c{cam + 1}s{1 + frame % 6}_{frame % 10**6:06d}_{i % 100:02d}.jpg",
    name_lists=False, max_cameras=9)


def generate(root: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write the person dataset under `root` in Market-1501's layout (locked as `synth.generate`)."""
    return synth.generate(root, spec, kind=PERSONS)


def ensure(root: str | Path, spec: SynthSpec) -> Path:
    """Generate unless current, then hold the shared read lock (as `synth.ensure`)."""
    return synth.ensure(root, spec, kind=PERSONS)
