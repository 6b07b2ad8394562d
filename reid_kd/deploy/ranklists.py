"""`reidkd ranklists`: several models' ranked lists of the same queries side by side, and a page to browse them.

Each model embeds the config's query and gallery images at the size it was trained on (as `reidkd eval` and
`reidkd index` score it) and each query's AP is exact under the protocol: gallery items of the query's
identity under its camera are junk (datasets without cameras drop nothing), queries without a positive are
skipped; plain similarity, no re-ranking. Named selections pick the queries (`SELECTIONS`), always looking at
the last model: the one distillation made, compared with a reference (its baseline). Each query gets one
PNG (the query, then a row per model: its name, the query's AP, its top-k with the query's identity green
and another red), and `index.html` lists the pictures by selection with each query's AP per model.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reid_kd.data.datasets.base import ReIDDataset
from reid_kd.data.image_dataset import load_dataset
from reid_kd.deploy.compared import PAIRED, SELECTIONS, Compared
from reid_kd.deploy.index import extract
from reid_kd.deploy.model import load_checkpoint
from reid_kd.engine.preflight import check_positives
from reid_kd.errors import UserError
from reid_kd.evaluation import evaluate
from reid_kd.evaluation.visualize import draw_side_by_side, query_png, top_matches, write_png
from reid_kd.utils.io import write_text

def select_queries(ap: np.ndarray, how: str, n: int, reference: int = 0, seed: int = 0) -> np.ndarray:
    """Up to `n` query indices by selection `how`, from `ap` (models x queries, NaN where a query is skipped),
    best example first: `fixed` / `broken` only where the last model's AP is above / below the reference's,
    ties in query order; `random` a seeded draw, in query order."""
    valid = np.flatnonzero(np.isfinite(ap).all(0))
    if how == "random":
        return np.sort(np.random.default_rng(seed).permutation(valid)[:n])
    last, change = ap[-1, valid], ap[-1, valid] - ap[reference, valid]
    key = {"fixed": -change, "broken": change, "worst": last, "best": -last}[how]
    order = np.argsort(key, kind="stable")
    if how in PAIRED:
        order = order[key[order] < 0]
    return valid[order[:n]]


@dataclass
class Scored:
    """One model's features of the query and gallery images, and each query's AP (NaN: skipped)."""

    name: str
    qf: np.ndarray
    gf: np.ndarray
    ap: np.ndarray


def labels(items: list) -> tuple[np.ndarray, np.ndarray]:
    """(identities, cameras) of items."""
    return np.array([it.pid for it in items], np.int64), np.array([it.camid for it in items], np.int64)


def score(models: list[Compared], dataset: ReIDDataset, cfg: dict, device: torch.device) -> list[Scored]:
    """Each model's features of the dataset's query and gallery (the first of several gallery draws) and AP per
    query, scored as `evaluate` scores them."""
    check_positives(dataset)  # one line naming the folders, not evaluate's error
    (q_pids, q_cams), (g_pids, g_cams) = labels(dataset.query), labels(dataset.gallery)
    data, options = cfg["data"], {k: cfg["eval"][k] for k in ("metric", "max_rank", "query_chunk")}
    use_gpu = cfg["eval"]["faiss_gpu"] == "auto"
    scored = []
    for m in models:
        model = load_checkpoint(m.checkpoint, device)
        qf, gf = (extract(model, items, device, data["test_batch_size"], data["workers"], progress=m.name)
                  for items in (dataset.query, dataset.gallery))
        result = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, **options, use_gpu=use_gpu,
                          same_camera_is_junk=dataset.has_cameras, device=device)
        scored.append(Scored(m.name, qf, gf, result["query_ap"]))
    return scored


def reference_index(names: list[str], reference: str | None) -> int:
    """The model `fixed` and `broken` compare the last one with: `reference`, else `baseline`, else the first."""
    wanted = reference or ("baseline" if "baseline" in names[:-1] else names[0])
    if wanted not in names:
        raise UserError(f"--reference {wanted!r} is none of the models ({', '.join(names)})")
    if wanted == names[-1]:
        raise UserError(f"--reference {wanted!r} is the last model, the one compared with it; name another")
    return names.index(wanted)


def write_rank_lists(models: list[Compared], cfg: dict, out: str | Path, device: torch.device,
                     selections: list[str] | None = None, n: int = 5, top_k: int = 10, seed: int = 0,
                     reference: str | None = None) -> tuple[Path, int]:
    """The pictures and `index.html` in `out`; returns the page and the number of pictures. `selections`
    None: every one that applies (those comparing two models only with several)."""
    names = [m.name for m in models]
    selections = selections or [s for s in SELECTIONS if len(models) > 1 or s not in PAIRED]
    if len(models) < 2 and set(selections) & set(PAIRED):
        raise UserError(f"--select {'/'.join(PAIRED)} compares the last model with another; give two models or more")
    ref = reference_index(names, reference) if len(models) > 1 else 0
    dataset = load_dataset(cfg["data"])
    scored = score(models, dataset, cfg, device)
    ap = np.stack([s.ap for s in scored])
    picks = {how: select_queries(ap, how, n, ref, seed) for how in selections}
    chosen = np.unique(np.concatenate(list(picks.values()))).astype(int)
    (q_pids, q_cams), (g_pids, g_cams) = labels(dataset.query), labels(dataset.gallery)
    lists = [top_matches(s.qf, s.gf, q_pids, g_pids, q_cams, g_cams, chosen, top_k, cfg["eval"]["metric"],
                         cfg["eval"]["faiss_gpu"] == "auto", dataset.has_cameras) for s in scored]
    out = Path(out)
    for j, qi in enumerate(chosen):
        rows = [(f"{s.name}: AP {100 * s.ap[qi]:.1f}", [dataset.gallery[g] for g in found[j][0]], found[j][1])
                for s, found in zip(scored, lists)]
        write_png(draw_side_by_side(dataset.query[qi], rows, top_k), out / query_png(qi, dataset.query[qi]))
    page = index_page(names, ap, picks, dataset, top_k, ref, seed)
    return write_text(page, out / "index.html"), len(chosen)


STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:100em} table{border-collapse:collapse;margin:.5em 0} "
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right} img{max-width:100%} figure{margin:1em 0}")


def index_page(names: list[str], ap: np.ndarray, picks: dict[str, np.ndarray], dataset: ReIDDataset, top_k: int,
               reference: int, seed: int) -> str:
    """The static page: what the pictures show, each model's mAP, then per selection a table of its queries' APs
    per model and their pictures (relative links: the folder can be moved or served as it is)."""
    e = html.escape
    valid = np.isfinite(ap).all(0)
    junk = ("Gallery images of the query's identity under its camera are left out, as in the metrics."
            if dataset.has_cameras else "The dataset records no camera: no gallery image is left out.")
    title = f"Rank lists: {e(', '.join(names))}"
    head = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>", f"<h1>{title}</h1>",
            f"<p>{e(dataset.name)}: {int(valid.sum())} of {len(dataset.query)} queries have a positive in the "
            f"gallery of {len(dataset.gallery)} images. Each picture shows a query, then each model's top {top_k}: "
            f"green border the query's identity, red another. {junk} AP in %.</p>",
            "<table><tr><th>model</th><th>mAP</th></tr>"
            + "".join(f"<tr><th>{e(n)}</th><td>{100 * np.nanmean(a):.2f}</td></tr>" for n, a in zip(names, ap))
            + "</table>",
            "<p>" + " · ".join(f"<a href=\"#{how}\">{how}</a>" for how in picks) + "</p>"]
    words = {"last": names[-1], "reference": names[reference], "seed": seed}
    body = [_section(how, SELECTIONS[how].format(**words), queries, names, ap, dataset)
            for how, queries in picks.items()]
    return "\n".join(head + body + ["</body></html>\n"])


def _section(how: str, said: str, queries: np.ndarray, names: list[str], ap: np.ndarray,
             dataset: ReIDDataset) -> str:
    e = html.escape
    if not len(queries):
        return f"<h2 id=\"{how}\">{how}</h2><p>{e(said)}: none.</p>"
    header = "".join(f"<th>{e(n)}</th>" for n in names)
    rows, figures = [], []
    for qi in queries:
        item, anchor = dataset.query[qi], f"{how}-{qi}"
        rows.append(f"<tr><td><a href=\"#{anchor}\">{qi}</a></td><td>{item.pid}</td>"
                    + "".join(f"<td>{100 * a:.1f}</td>" for a in ap[:, qi]) + "</tr>")
        figures.append(f"<figure id=\"{anchor}\"><img src=\"{e(query_png(qi, item))}\" alt=\"query {qi}\">"
                       f"<figcaption>query {qi} (identity {item.pid}, {e(Path(item.path).name)})</figcaption></figure>")
    table = f"<table><tr><th>query</th><th>identity</th>{header}</tr>" + "".join(rows) + "</table>"
    return f"<h2 id=\"{how}\">{how}</h2><p>{e(said)}.</p>" + table + "\n" + "\n".join(figures)
