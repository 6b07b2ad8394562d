"""Ranked lists as images: a query beside its top-k gallery images, green border = same identity, red = not;
or one query's top-k by several models, a row each (`draw_side_by_side`, for `reidkd ranklists`).

Gallery items of the query's identity under the query's camera are junk under the protocol and are
skipped, as in the metrics (datasets without cameras skip nothing).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reid_kd.data.image_dataset import read_image
from reid_kd.evaluation.extract import extract_features
from reid_kd.evaluation.search import top_k as search_top_k
from reid_kd.utils.io import write_bytes

TILE_H, TILE_W = 128, 128  # each image, border included
BORDER = 4
GAP = 12  # between the query and its ranked list, and around the panel
LABEL_H = 18  # a caption strip under each tile
TITLE_H = 22  # the strip naming a model above its row (side by side)
GREEN, RED, GREY = (0, 170, 0), (220, 0, 0), (128, 128, 128)  # RGB


def panel_size(top_k: int) -> tuple[int, int]:
    """(height, width) of one ranked-list image."""
    return GAP + TILE_H + LABEL_H + GAP, GAP + TILE_W + GAP + top_k * TILE_W + (top_k - 1) * 2 + GAP


def _tile(path: str, color: tuple[int, int, int], caption: str) -> np.ndarray:
    img = cv2.resize(read_image(path), (TILE_W - 2 * BORDER, TILE_H - 2 * BORDER), interpolation=cv2.INTER_AREA)
    tile = np.full((TILE_H + LABEL_H, TILE_W, 3), 255, np.uint8)
    tile[:TILE_H] = color
    tile[BORDER:TILE_H - BORDER, BORDER:TILE_W - BORDER] = img
    cv2.putText(tile, caption, (2, TILE_H + LABEL_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _label(item) -> str:
    """`id 12 c3`, or the file name where the identity is unknown (-1). Cameras are stored from 0 and shown from 1,
    as the datasets' file names count them (VeRi's `c003` is camid 2)."""
    return f"id {item.pid} c{item.camid + 1}" if item.pid >= 0 else Path(item.path).stem[:14]


def ranked_row(gallery_items: list, matches: list[bool | None], top_k: int) -> np.ndarray:
    """The gallery items' tiles in rank order, `top_k` slots wide (the ones not found stay white); a match None
    (the query's identity is unknown) gets a grey border."""
    row = np.full((TILE_H + LABEL_H, top_k * TILE_W + (top_k - 1) * 2, 3), 255, np.uint8)
    for rank, (item, same) in enumerate(zip(gallery_items[:top_k], matches), 1):
        color = GREY if same is None else GREEN if same else RED
        x = (rank - 1) * (TILE_W + 2)
        row[:, x:x + TILE_W] = _tile(item.path, color, f"{rank}: {_label(item)}")
    return row


def draw_ranked_list(query_item, gallery_items: list, matches: list[bool | None], top_k: int) -> np.ndarray:
    """An RGB panel of `panel_size(top_k)`: the query (grey border), then the gallery items in rank order."""
    h, w = panel_size(top_k)
    panel = np.full((h, w, 3), 255, np.uint8)
    panel[GAP:GAP + TILE_H + LABEL_H, GAP:GAP + TILE_W] = _tile(query_item.path, GREY, f"query {_label(query_item)}")
    panel[GAP:GAP + TILE_H + LABEL_H, GAP + TILE_W + GAP:w - GAP] = ranked_row(gallery_items, matches, top_k)
    return panel


def side_by_side_size(n_rows: int, top_k: int) -> tuple[int, int]:
    """(height, width) of a `draw_side_by_side` picture of `n_rows` models."""
    return GAP + n_rows * (TITLE_H + TILE_H + LABEL_H) + (n_rows - 1) * GAP + GAP, panel_size(top_k)[1]


def row_top(i: int) -> int:
    """The y of row i's first tile in a `draw_side_by_side` picture (its title strip lies just above)."""
    return GAP + i * (TITLE_H + TILE_H + LABEL_H + GAP) + TITLE_H


def draw_side_by_side(query_item, rows: list[tuple[str, list, list[bool | None]]], top_k: int) -> np.ndarray:
    """One query's ranked lists by several models: the query once at the left, then per model (title, its
    top-k items, whether each is the query's identity) a title strip over its row of tiles."""
    h, w = side_by_side_size(len(rows), top_k)
    panel = np.full((h, w, 3), 255, np.uint8)
    x = GAP + TILE_W + GAP
    panel[row_top(0):row_top(0) + TILE_H + LABEL_H, GAP:GAP + TILE_W] = _tile(query_item.path, GREY,
                                                                           f"query {_label(query_item)}")
    for i, (title, items, matches) in enumerate(rows):
        y = row_top(i)
        cv2.putText(panel, title, (x, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        panel[y:y + TILE_H + LABEL_H, x:w - GAP] = ranked_row(items, matches, top_k)
    return panel


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """An RGB image as a PNG file (written whole or not at all)."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("PNG encoding failed")
    return write_bytes(png.tobytes(), Path(path))


def top_matches(qf: np.ndarray, gf: np.ndarray, q_pids, g_pids, q_cams, g_cams, chosen, top_k: int, metric: str,
                use_gpu: bool, same_camera_is_junk: bool) -> list[tuple[np.ndarray, list[bool]]]:
    """For each chosen query: its `top_k` gallery rows (junk left out, as in the metrics) and whether each holds
    the query's identity."""
    junk = [(g_pids == q_pids[qi]) & (g_cams == q_cams[qi]) if same_camera_is_junk else np.zeros(len(g_pids), bool)
            for qi in chosen]
    k = top_k + max((int(j.sum()) for j in junk), default=0)  # enough neighbours to fill top_k after dropping junk
    ranked = search_top_k(qf[chosen], gf, k, metric, use_gpu) if len(chosen) else []
    found = []
    for qi, order, junk_of_query in zip(chosen, ranked, junk):
        top = order[~junk_of_query[order]][:top_k]
        found.append((top, [bool(g_pids[j] == q_pids[qi]) for j in top]))
    return found


def query_png(index: int, item) -> str:
    """The file name of query `index`'s picture."""
    return f"query{index:05d}_id{item.pid}.png"


def visualize_ranked_lists(model, query_loader, gallery_loader, eval_cfg: dict, device, n: int, out_dir: str | Path,
                           top_k: int = 10) -> list[Path]:
    """Write PNGs of `n` queries (evenly spread over the query set) with their top-`top_k` gallery images."""
    out_dir = Path(out_dir)
    q_items, g_items = query_loader.dataset.items, gallery_loader.dataset.items
    n = min(n, len(q_items))
    if n <= 0:
        return []
    chosen = np.unique(np.linspace(0, len(q_items) - 1, n).round().astype(int))
    source = getattr(query_loader.dataset, "source", None)
    qf, q_pids, q_cams = extract_features(model, query_loader, device)
    gf, g_pids, g_cams = extract_features(model, gallery_loader, device)
    found = top_matches(qf, gf, q_pids, g_pids, q_cams, g_cams, chosen, top_k, eval_cfg["metric"],
                        eval_cfg["faiss_gpu"] == "auto", source.has_cameras if source is not None else True)
    return [write_png(draw_ranked_list(q_items[qi], [g_items[j] for j in top], same, top_k),
                      out_dir / query_png(qi, q_items[qi])) for qi, (top, same) in zip(chosen, found)]
