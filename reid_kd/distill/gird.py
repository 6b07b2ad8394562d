"""GIRD: relation distillation with feature reutilisation and relation evolution.

Paper: Hu, Zeng, Xie et al., Neural Computing and Applications, 2024. Its full text is not public and
no GIRD code is released; its summary gives three ideas: stored features of earlier batches reused,
similarity relations between samples distilled, the relations' evolution across layers distilled.
Each concrete form below follows the public code of the authors' group (Xie, Zhu, Zeng et al.,
Huaqiao University) where it has one, and says "ours" where it has none. Every piece is an option
(`distill.gird.*`; `reidkd methods` prints each default's source).

1. Memory: a FIFO queue of *teacher* features only, one per distilled layer, its size a multiple of
   the batch (CDD, CVPR 2023, SCY-X/Capacity_Dynamic_Distillation `MSMT/processor/utils_GRG.py`). The
   teacher is frozen, so stored features never go stale. Ours: written after the batch's loss with
   each sample's dataset index, in buffers (it travels with `state_dict()` through resume).
2. Relations: asymmetric, the student's vectors against the teacher's, R_s = ŝ · [t̂_batch ; M]ᵀ
   matched to R_t = t̂ · [t̂_batch ; M]ᵀ (DEAP, Pattern Recognition 2024, `VeRi_PR/loss/MKD.py`: d(f_s, f_t)
   against d(f_t, f_t); SCY-X/D3still `AIR_Distiller/distillers/D3.py`: student · teacherᵀ). The in-batch
   and the memory columns form one row (ours; CDD `loss/ACRD.py` relates the student to the teacher's
   stored neighbours).
3. Layers: stages 3 and 4 (DEAP `model/backbones/student_resnet.py`) as MKD's spatial attention maps
   (channel mean of f², flattened, L2-normalised; the larger network's map average-pooled to the
   smaller H×W first), which need no width adapter; then the L2-normalised post-BN embedding (D3still's
   `retrieval_feat`). Where the embeddings' widths differ, a learned bias-free linear map takes the
   student's to the teacher's width (ours; AIR-Distiller gives both networks a head of one width).
4. Masking: an image's relation to itself does not count - its own column, a duplicate of it in the
   batch, a memory slot holding it (ours: by dataset index). D3.py likewise leaves each row's top
   teacher similarity (itself) out of its relation terms; MKD instead weights the diagonal 10 against
   1 under an MSE, but under a sharp softmax t̂ᵢ·t̂ᵢ = 1 would take all of a teacher row's mass.
5. Loss: per row, KL(softmax(R_t / T_t) ‖ softmax(R_s / T)) times T² (`kl_soft`), so the student follows
   the teacher's nearest neighbours rather than every negative (AIR-Distiller `distillers/CSD.py`: a KL
   over the teacher's top neighbours, teacher temperature 0.01, student 1, unscaled). Ours by default: one
   temperature for both, 0.05, and every column (the sharp softmax already weighs the nearest). CSD's form
   is reachable: `teacher_temperature` apart from `temperature` (the student's, whose square scales the KL:
   1 at CSD's T = 1), and `top_k`, which keeps each row's k columns the teacher ranks highest over batch and
   memory alike (the rest masked as an image against itself is). Why (issue 36): under one sharp T a
   teacher row's mass may sit on its few positives, leaving the memory's many negatives almost no
   gradient; a softer student T, or a top-k, lets every retrieved column push.
6. Evolution: E = R(l+1) − R(l) over the same anchors, L1 between the student's and the teacher's E
   (MBDL, VCIP 2020: the difference of matching behaviour between two layers, matched by L1), a mean over
   every kept entry; `evolution_memory_weight` weighs a memory column's entries against a batch column's
   (ours: under the plain mean the memory's columns, mostly negatives, outnumber the batch's positives).

Weights (ours: gradient window, `tests/test_distill_window.py`): `weight_sim = 200`, `weight_evo = 5` send
about 0.34× and 0.24× the re-ID loss's gradient into the quickstart student's backbone (0.51× together);
at 1 the T²-scaled KL sends 0.002×. Not tuned yet: tune on validation identities like every method.

Whether the memory gets a say in a trained run is measured by `benchmarks/gird_memory.py RUN_FOLDER`: per
layer, the teacher's softmax mass on memory columns (same identity, other) and the share of the student's
similarity gradient that comes from them; `--set` reads the same run under another temperature or top-k.
Measured (issue 36) on a synth_cpu GIRD run at its tuned weights (seed 0, 16×4 batches, 1,024 slots full,
16 batches; trained on a 2-core AVX2 EPYC with the teacher's forward in float32, teacher 80.48 mAP, GIRD
71.15), teacher mass on memory same / memory other / batch same / batch other, then the memory's share of
the student's gradient:
- the two attention-map layers: 0.004-0.005 / 0.94 / 0.004 / 0.05, share 0.94. The teacher's rows are
  nearly flat (16-value maps of every image alike): the mass follows the column count (1,024 of 1,084 in
  the memory), so these layers pass the memory's columns most of the gradient towards a target that hardly
  tells images apart.
- the embedding: 0.40 / 0.05 / 0.54 / 0.001, share 0.59. Under one sharp T = 0.05 a row's mass sits on its
  positives, as issue 36's toy model said (negatives ≤ 0.08), but not only on the batch's: stored images of
  the row's identity take 0.40 of it, and the memory most of the gradient. Read under CSD's temperatures
  (student 1, teacher 0.01): 0.41 / 0.02 / 0.57 / 0.00, share 0.69; with its top-k 96 too, the same; under a
  softer teacher T = 0.2: 0.14 / 0.69 / 0.13 / 0.04, share 0.71, the form where the memory's negatives get
  the mass.
So the memory is not silent at the default: where the ablation finds it changes nothing, it is not for lack
of gradient; the embedding's stored positives and a softer teacher temperature are the readings to tune.

The earlier reading (ours, before issue 24) stays reachable: `relation: self` (each network against
its own batch and memory, the student's features stored too), `loss: mse`, `mask_self: false`,
`stage_form: pooled`, `layers: [1, 2, 3, 4]`. Under data-parallel training every rank relates its rows
to the global batch and enqueues the gathered global batch in rank order: one memory, as one process.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.at import attention_map
from reid_kd.distill.base import Distiller
from reid_kd.distill.common import N_STAGES, check_layers, kl_soft, layer_feature, model_widths
from reid_kd.models.reid_model import ModelOutput
from reid_kd.utils import distributed

MASKED = -1e4  # a masked relation's logit: its softmax weight underflows to 0 for every allowed temperature


def masked_mean(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x.mean() if keep is None else x[keep].mean()


class GIRD(Distiller):
    name = "gird"
    per_sample = True  # called with dataset indices: a batch column or memory slot of the same image is masked

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict, train_targets: torch.Tensor | None = None):
        super().__init__(student, teacher, cfg)  # train_targets (the per-sample build's labels): not used
        self.layers = list(cfg["layers"])
        check_layers("distill.gird.layers", self.layers, cfg["embedding"], student, teacher)
        self.embedding, self.stage_form, self.cross = cfg["embedding"], cfg["stage_form"], cfg["relation"] == "cross"
        self.kind, self.temperature, self.mask_self = cfg["loss"], cfg["temperature"], cfg["mask_self"]
        self.teacher_temperature, self.top_k = cfg["teacher_temperature"] or cfg["temperature"], cfg["top_k"]
        self.w_sim, self.w_evo, self.w_evo_memory = cfg["weight_sim"], cfg["weight_evo"], cfg["evolution_memory_weight"]
        self.use_memory, self.use_evolution = cfg["use_memory"], cfg["use_evolution"]
        s_stages, s_dim = model_widths(student, cfg["embedding"])
        t_stages, t_dim = model_widths(teacher, cfg["embedding"])
        s_widths, t_widths = s_stages + [s_dim], t_stages + [t_dim]
        self.proj = nn.ModuleDict()  # cross relations on pooled vectors of different widths
        for i in self.layers:
            if self.cross and not self.is_attention(i) and s_widths[i] != t_widths[i]:
                self.proj[str(i)] = nn.Linear(s_widths[i], t_widths[i], bias=False)
        # the memory's vector buffers, allocated at the first write (an attention map's length is the input's H×W)
        self.stored = ([f"mem_t{i}" for i in self.layers] + ([] if self.cross else [f"mem_s{i}" for i in self.layers])
                       if self.use_memory else [])
        if self.use_memory:
            for name in self.stored:
                self.register_buffer(name, torch.zeros(0))
            self.register_buffer("mem_index", torch.full((cfg["memory_size"],), -1, dtype=torch.long))
            self.register_buffer("mem_ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("mem_count", torch.zeros((), dtype=torch.long))

    def is_attention(self, layer: int) -> bool:
        return layer < N_STAGES and self.stage_form == "attention"

    @property
    def memory_size(self) -> int:
        return self.mem_index.numel()

    def memory(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The filled slots of a memory buffer (slot order), or no rows when off or still empty."""
        n = int(self.mem_count) if self.use_memory else 0
        return getattr(self, name)[:n] if n else like.new_zeros(0, like.shape[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self.stored:  # take the stored vectors' shape from the checkpoint
            if prefix + name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[prefix + name], device=self.mem_index.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def enqueue(self, vectors: dict[str, torch.Tensor], indices: torch.Tensor) -> None:
        """FIFO write of one (global) batch's vectors and dataset indices (its newest `memory_size` if larger)."""
        size, b = self.memory_size, indices.shape[0]
        keep, n = slice(max(b - size, 0), b), min(b, size)
        slots = (self.mem_ptr + torch.arange(n, device=self.mem_index.device)) % size
        for name, v in vectors.items():
            if getattr(self, name).numel() == 0:
                setattr(self, name, v.new_zeros(size, v.shape[1], dtype=torch.float32))
            getattr(self, name)[slots] = v[keep].detach().float()
        self.mem_index[slots] = indices[keep].to(self.mem_index.device)
        self.mem_ptr.copy_((self.mem_ptr + n) % size)
        self.mem_count.copy_(torch.clamp(self.mem_count + n, max=size))

    def vectors(self, student: ModelOutput, teacher: ModelOutput, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i's student and teacher vectors, L2-normalised (the student's in the teacher's space)."""
        if self.is_attention(i):
            f_s, f_t = student.feats[i].float(), teacher.feats[i].float()
            size = [min(a, b) for a, b in zip(f_s.shape[-2:], f_t.shape[-2:])]  # MKD: the larger map pooled down
            a_s, a_t = (attention_map(F.adaptive_avg_pool2d(f, size), 2).flatten(1) for f in (f_s, f_t))
            return F.normalize(a_s, dim=1), F.normalize(a_t, dim=1)
        s = layer_feature(student, i, self.embedding).float()
        s = self.proj[str(i)](s) if str(i) in self.proj else s
        return F.normalize(s, dim=1), F.normalize(layer_feature(teacher, i, self.embedding).float(), dim=1)

    def relations(self, student: ModelOutput, teacher: ModelOutput
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor]]:
        """Per layer, the student's and the teacher's B × (B_global + K) relations; the vectors to store."""
        r_s, r_t, new = [], [], {}
        for i in self.layers:
            s, t = self.vectors(student, teacher, i)
            # under data-parallel training the columns are every rank's rows: each row is the one a single
            # process computes on the global batch
            t_all = distributed.gather_rows(t)
            s_all = t_all if self.cross else distributed.gather_rows_with_grad(s)
            m_t = self.memory(f"mem_t{i}", t)
            m_s = m_t if self.cross else self.memory(f"mem_s{i}", s)
            r_s.append(s @ torch.cat([s_all, m_s]).t())  # cat copies: the in-place enqueue cannot touch it
            r_t.append(t @ torch.cat([t_all, m_t]).t())
            new[f"mem_t{i}"] = t_all
            if not self.cross:
                new[f"mem_s{i}"] = distributed.gather_rows(s.detach())
        return r_s, r_t, new

    def self_mask(self, indices: torch.Tensor, columns: torch.Tensor) -> torch.Tensor | None:
        """Which relations pair an image with itself: its own column, a duplicate in the batch, its memory slot
        (None when `mask_self` is off). `columns`: the global batch's dataset indices."""
        if not self.mask_self:
            return None
        stored = self.mem_index[:int(self.mem_count)] if self.use_memory else columns[:0]
        return indices.to(columns.device)[:, None] == torch.cat([columns, stored])[None, :]

    def top_k_mask(self, r_t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """`mask`, and with `top_k` every column outside each row's k that the teacher ranks highest (CSD's
        neighbours), an image against itself ranked last."""
        if self.top_k is None or self.top_k >= r_t.shape[1]:
            return mask
        ranked = r_t if mask is None else r_t.masked_fill(mask, MASKED)
        outside = torch.ones_like(r_t, dtype=torch.bool).scatter_(1, ranked.topk(self.top_k, dim=1).indices, False)
        return outside if mask is None else mask | outside

    def sim_loss(self, r_s: torch.Tensor, r_t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mask = self.top_k_mask(r_t, mask)
        if self.kind == "mse":
            return masked_mean((r_s - r_t) ** 2, None if mask is None else ~mask)
        if mask is not None:
            r_s, r_t = r_s.masked_fill(mask, MASKED), r_t.masked_fill(mask, MASKED)
        return kl_soft(r_s, r_t, self.temperature, self.teacher_temperature)

    def evolution(self, r_s: list[torch.Tensor], r_t: list[torch.Tensor], keep: torch.Tensor | None,
                  n_batch: int) -> torch.Tensor:
        """Mean over consecutive layers of |ΔR_s − ΔR_t| over the kept entries, a memory column's (those after the
        `n_batch` batch columns) weighing `evolution_memory_weight` against a batch column's 1."""
        diffs = [((r_s[k + 1] - r_s[k]) - (r_t[k + 1] - r_t[k])).abs() for k in range(len(r_s) - 1)]
        if self.w_evo_memory == 1.0:  # the plain mean, summed as before the option (no number moves)
            return torch.stack([masked_mean(e, keep) for e in diffs]).mean()
        w = diffs[0].new_full(diffs[0].shape, self.w_evo_memory)
        w[:, :n_batch] = 1.0
        w = w if keep is None else w * keep
        return torch.stack([(e * w).sum() / w.sum() for e in diffs]).mean()

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor,
                indices: torch.Tensor) -> dict[str, torch.Tensor]:
        r_s, r_t, new = self.relations(student, teacher)
        columns = distributed.gather_rows(indices.to(r_s[0].device))
        mask = self.self_mask(indices, columns)
        sim = torch.stack([self.sim_loss(a, b, mask) for a, b in zip(r_s, r_t)]).mean()
        losses = {"gird_sim": self.w_sim * sim}
        if self.use_evolution and len(self.layers) > 1:
            keep = None if mask is None else ~mask
            losses["gird_evo"] = self.w_evo * self.evolution(r_s, r_t, keep, len(columns))
        if self.use_memory:  # after the loss: the current batch never meets itself in the memory
            self.enqueue(new, columns)
        return losses
