"""`reidkd search`: the top-k gallery items of query images, as a table and as one ranked-list PNG.

The query images go through the model the index was built with (checked by its weights' SHA-256), so a
query is always compared with gallery features of the same model, or through a student distilled from that
model into its space (`GalleryIndex.query_model`: asymmetric retrieval).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reid_kd.data.datasets.base import Item
from reid_kd.deploy.index import GalleryIndex, extract, items_from_images
from reid_kd.evaluation.visualize import GAP, draw_ranked_list, write_png


def search_images(gallery: GalleryIndex, images: list[str], top_k: int = 10, checkpoint: str | None = None,
                  device: torch.device | str = "cpu", query_checkpoint: str | None = None
                  ) -> tuple[list[Item], pd.DataFrame]:
    """The query items and a table with one row per (query, rank): score, gallery path, identity, camera."""
    queries = items_from_images(images)
    model = gallery.query_encoder(checkpoint, query_checkpoint, device)
    scores, rows = gallery.search(extract(model, queries, torch.device(device)), top_k)
    table = []
    for query, score_row, id_row in zip(queries, scores, rows):
        for rank, (score, row) in enumerate(zip(score_row, id_row), 1):
            if row < 0:  # an approximate index found fewer than top_k
                break
            hit = gallery.items.iloc[row]
            table.append({"query": query.path, "rank": rank, "score": float(score), "path": hit["path"],
                          "pid": int(hit["pid"]), "camid": int(hit["camid"])})
    return queries, pd.DataFrame(table, columns=["query", "rank", "score", "path", "pid", "camid"])


PNG_COLUMNS = 50  # ranked items drawn per query at most (50 tiles: a 6,600-pixel-wide picture)


def write_ranked_lists_png(queries: list[Item], table: pd.DataFrame, top_k: int, out: str | Path) -> Path:
    """One PNG, a row per query: the query and its ranked gallery items (green: same identity, red: another,
    grey: the query's identity is unknown), as wide as the hits found and at most `PNG_COLUMNS` of them."""
    top_k = max(1, min(top_k, PNG_COLUMNS, int(table["rank"].max()) if len(table) else 1))
    panels = []
    for query in queries:
        hits = table[(table["query"] == query.path) & (table["rank"] <= top_k)]
        gallery = [Item(p, int(i), int(c)) for p, i, c in zip(hits["path"], hits["pid"], hits["camid"])]
        same = [None if query.pid < 0 else it.pid == query.pid for it in gallery]
        panels.append(draw_ranked_list(query, gallery, same, top_k))
    return write_png(np.concatenate([panels[0]] + [p[GAP:] for p in panels[1:]]), out)  # rows share their gap
