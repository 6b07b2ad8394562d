"""GIRD: relation distillation with feature reutilisation and relation evolution.

Paper: Hu, Zeng, Xie et al., Neural Computing and Applications, 2024 (GIRD). Its full text is not
public and we know of no released code, so this module is our reading of the method's published
summary, which gives three ideas: features of earlier batches are stored and reused, so relations
reach beyond the mini-batch; the knowledge distilled is the similarity relation between samples; the
evolution of those relations across layers is distilled as well. Every concrete form below (what is
stored, how, which relation, which loss, which layers, which weights) is ours, and each piece is a
config option (`distill.gird.*`):

1. Memory (ours: its form). A FIFO ring per distilled layer holds L2-normalised, detached, pooled
   features of earlier batches - the teacher's and the student's for the same images - with their
   identity labels. It is written *after* the current batch's loss (a batch never meets itself in
   it) and lives in buffers, so it travels with `state_dict()` through checkpoint and resume. The
   labels are kept for analysis and label-aware variants; the default losses do not use them.
2. Similarity relation (ours: cosine, MSE). Per layer, R = f̂ · [f̂ ; M]ᵀ (B × (B+K), K = filled
   slots) for the teacher and the student, each against its own memory; loss between them: MSE
   (default) or row-softmax KL at `temperature`, scaled by T² like Hinton's KD.
3. Relation evolution (ours: difference, L1). Between consecutive distilled layers, E = R(l+1) − R(l);
   L1 between the student's and the teacher's E.

Defaults and where they come from (all ours; the paper's values are not public):
- `layers = [1, 2, 3, 4]` with `embedding = bn_feat`: the pooled maps of stages 2, 3 and 4, then the
  retrieval feature after the BN neck. Index 4 with `global_feat` would be the pooled last stage
  again (3 and 4 identical: the relation counted twice and the 3→4 evolution always zero), so such a
  list is rejected, as is `bn_feat` beside 3 in a model without a BN neck.
- `memory_size = 1024` slots: below one epoch of the synthetic training set (1500 images), so the
  memory holds no stale second copy of an image; keep it below the training set's size (the VeRi
  configs use 24000 of VeRi-776's 37778 images).
- The similarity term is the *mean* over distilled layers and the evolution term the mean over
  consecutive pairs, so the weights do not scale with the number of layers.
- `weight_sim = 10`, `weight_evo = 10`: at 1 the GIRD terms sent only 0.04-0.05× the re-ID loss's
  gradient into the backbone of the quickstart student (epochs 2 to 20), under the gradient
  window's 0.05; at 10 about 0.4-0.5×. A held-out check (the synthetic set drawn with seed 1, not
  the seed-0 set the benchmarks report; 12 epochs, one seed, the earlier layer defaults) gave
  10.41 / 10.78 / 7.21 mAP at weights 1 / 10 / 50 against 10.08 for the baseline: 10 is no worse.
- `temperature = 0.1` for the KL variant: cosines lie in [−1, 1], so a small temperature sharpens
  the rows.
- `cross_memory = false`: when on, the student batch is related to the *teacher's* memory; student
  features then pass through a learned bias-free linear map (one per layer) to the teacher's width
  when widths differ, and are L2-normalised after it.
Ablations (entries of the suites): `use_memory: false` (batch-only relations, B × B),
`use_evolution: false`, `cross_memory: true`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import check_layers, kl_soft, layer_feature, model_widths
from reid_kd.models.reid_model import ModelOutput
from reid_kd.utils import distributed


def relation_loss(r_s: torch.Tensor, r_t: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    return F.mse_loss(r_s, r_t) if kind == "mse" else kl_soft(r_s, r_t, temperature)


class GIRD(Distiller):
    name = "gird"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.layers = list(cfg["layers"])
        check_layers("distill.gird.layers", self.layers, cfg["embedding"], student, teacher)
        self.embedding, self.kind, self.temperature = cfg["embedding"], cfg["loss"], cfg["temperature"]
        self.w_sim, self.w_evo = cfg["weight_sim"], cfg["weight_evo"]
        self.use_memory, self.use_evolution = cfg["use_memory"], cfg["use_evolution"]
        self.cross_memory = cfg["cross_memory"] and self.use_memory
        s_stages, s_dim = model_widths(student)
        t_stages, t_dim = model_widths(teacher)
        s_widths, t_widths = s_stages + [s_dim], t_stages + [t_dim]
        size = cfg["memory_size"]
        if self.use_memory:
            for i in self.layers:
                self.register_buffer(f"mem_s{i}", torch.zeros(size, s_widths[i]))
                self.register_buffer(f"mem_t{i}", torch.zeros(size, t_widths[i]))
            self.register_buffer("mem_labels", torch.full((size,), -1, dtype=torch.long))
            self.register_buffer("mem_ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("mem_count", torch.zeros((), dtype=torch.long))
        self.proj = nn.ModuleDict()
        if self.cross_memory:
            for i in self.layers:
                if s_widths[i] != t_widths[i]:
                    self.proj[str(i)] = nn.Linear(s_widths[i], t_widths[i], bias=False)

    @property
    def memory_size(self) -> int:
        return self.mem_labels.numel()

    def memory(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(student, teacher) memory of a layer, filled slots only (ring order: slot order)."""
        n = int(self.mem_count)
        return getattr(self, f"mem_s{layer}")[:n], getattr(self, f"mem_t{layer}")[:n]

    @torch.no_grad()
    def enqueue(self, s_feats: dict[int, torch.Tensor], t_feats: dict[int, torch.Tensor], labels: torch.Tensor) -> None:
        """FIFO write of the normalised features of one batch (the newest `memory_size` if it is larger)."""
        size = self.memory_size
        b = labels.shape[0]
        keep = slice(max(b - size, 0), b)
        n = min(b, size)
        slots = (self.mem_ptr + torch.arange(n, device=labels.device)) % size
        for i in self.layers:
            getattr(self, f"mem_s{i}")[slots] = s_feats[i][keep].detach().to(self.mem_labels.device).float()
            getattr(self, f"mem_t{i}")[slots] = t_feats[i][keep].detach().float()
        self.mem_labels[slots] = labels[keep]
        self.mem_ptr.copy_((self.mem_ptr + n) % size)
        self.mem_count.copy_(torch.clamp(self.mem_count + n, max=size))

    def relations(self, student: ModelOutput, teacher: ModelOutput
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Per layer, the student's and the teacher's relation matrices, and the normalised features."""
        r_s, r_t, s_hat, t_hat = [], [], {}, {}
        for i in self.layers:
            s = F.normalize(layer_feature(student, i, self.embedding).float(), dim=1)
            t = F.normalize(layer_feature(teacher, i, self.embedding).float(), dim=1)
            s_hat[i], t_hat[i] = s, t
            # the batch's columns: under data-parallel training every rank's rows, so that each row is the
            # one a single process computes on the global batch (s and t themselves in one process)
            s_all, t_all = distributed.gather_rows_with_grad(s), distributed.gather_rows(t)
            if not self.use_memory:
                r_s.append(s @ s_all.t())
                r_t.append(t @ t_all.t())
                continue
            m_s, m_t = self.memory(i)
            if self.cross_memory:
                s_proj = F.normalize(self.proj[str(i)](s), dim=1) if str(i) in self.proj else s
                # a copy: autograd keeps it for backward, and the memory changes in place after the loss
                r_s.append(torch.cat([s @ s_all.t(), s_proj @ m_t.clone().t()], dim=1))
            else:
                r_s.append(s @ torch.cat([s_all, m_s]).t())  # cat copies: the in-place enqueue cannot touch it
            # the teacher side needs no gradient: no copy of its memory, only the B × (B+K) product
            r_t.append(torch.cat([t @ t_all.t(), t @ m_t.t()], dim=1))
        return r_s, r_t, s_hat, t_hat

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        r_s, r_t, s_hat, t_hat = self.relations(student, teacher)
        sim = torch.stack([relation_loss(a, b, self.kind, self.temperature) for a, b in zip(r_s, r_t)]).mean()
        losses = {"gird_sim": self.w_sim * sim}
        if self.use_evolution and len(self.layers) > 1:
            evo = torch.stack([F.l1_loss(r_s[k + 1] - r_s[k], r_t[k + 1] - r_t[k])
                               for k in range(len(self.layers) - 1)]).mean()
            losses["gird_evo"] = self.w_evo * evo
        if self.use_memory:  # after the loss: the current batch never meets itself in the memory
            # under data-parallel training every rank enqueues the global batch, in rank order: one memory
            gather = distributed.gather_rows
            self.enqueue({i: gather(v) for i, v in s_hat.items()}, {i: gather(v) for i, v in t_hat.items()},
                         gather(targets))
        return losses
