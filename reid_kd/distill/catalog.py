"""The registry of distillation methods: each one's description, options (defaults, types, bounds) and
where every default comes from, readable without torch; its class (`reid_kd.distill.<name>`) is
imported only when a run builds it. Each method module's docstring explains its defaults.
"""
from reid_kd.registry import Registry
from reid_kd.schema import Choice, Num, Typed

DISTILLERS = Registry("distillation method")


def _stage(default: int) -> Typed:
    """A stage index (0..3)."""
    return Num(default, 0, 3, why="a stage index")


def _stages(default: list[int]) -> Typed:
    """A list of stage indices (0..3)."""
    return Typed(list, default, optional=False, item=int, low=0, high=3, why="stage indices")


# The asymmetric-retrieval methods (csd, d3still, raml, rop, ugd) take their defaults from AIR-Distiller
# (SCY-X/D3still): its MSMT17 ResNet-101 → ResNet-18 configs ("MSMT17 config": the files
# Training_Configs/MSMT17/ResNet101_320x160_ResNet18_160x80/<method>.yaml), the re-ID setting closest to ours,
# and its config/defaults.py where those differ.
_TOP_K = "the number of the teacher's nearest batch samples distilled (the sample itself is the first)"

DISTILLERS.add(
    "at", "reid_kd.distill.at:AT",
    "AT (Zagoruyko & Komodakis, ICLR 2017): spatial attention maps of each stage",
    options={"weight": 250.0, "p": 2.0, "layers": _stages([0, 1, 2, 3])},
    sources={"weight": "ours: the paper's and RepDistiller's 10³ sends 10-18× the re-ID gradient; ÷4",
             "p": "paper (2)", "layers": "RepDistiller (every stage, feat[1:-1])"})

DISTILLERS.add(
    "cc", "reid_kd.distill.cc:CC",
    "CC (Peng et al., ICCV 2019): Gaussian-RBF correlation congruence (Taylor-expanded)",
    options={"weight": 100.0, "gamma": 0.4, "order": Num(2, 0), "embedding": Choice("bn_feat", "global_feat")},
    sources={"weight": "ours: the gradient window (0.02, RepDistiller's β for another CC loss, is inert here)",
             "gamma": "paper (0.4)", "order": "paper (2nd-order Taylor expansion)",
             "embedding": "ours: the retrieval feature, whose scale the BN neck holds"})

DISTILLERS.add(
    "crd", "reid_kd.distill.crd:CRD",
    "CRD (Tian et al., ICLR 2020): NCE against a momentum memory, negatives from other classes",
    options={"weight": 0.8, "feat_dim": 128, "nce_k": Num(16384, 1), "nce_t": 0.07,
             "nce_m": Num(0.5, 0.0, 0.999, why="a momentum of 1 never moves the memory"),
             "embedding": Choice("global_feat", "bn_feat")},
    sources={"weight": "RepDistiller (β for CRD: 0.8)", "feat_dim": "official code (128)",
             "nce_k": "official code (16384)", "nce_t": "official code (0.07)", "nce_m": "official code (0.5)",
             "embedding": "ours: the pooled pre-neck feature, as the official penultimate feature"})

DISTILLERS.add(
    "cskd", "reid_kd.distill.cskd:CSKD",
    "CSKD (Chen et al., ECCV 2020): intra-class offsets and inter-class centre cosines",
    options={"weight_intra": 0.02, "weight_pull": 1.0, "weight_inter": 0.4, "correct_only": True},
    sources={"weight_intra": "ours: the authors' 0.002 ×10 (theirs is inert here; proportions kept)",
             "weight_pull": "ours: the authors' 0.1 ×10",
             "weight_inter": "ours: the authors' 0.04 ×10",
             "correct_only": "authors' code (use_filter = True)"})

DISTILLERS.add(
    "csd", "reid_kd.distill.csd:CSD",
    "CSD (Wu et al., CVPR 2022): KL over each sample's top-k teacher neighbours, student-to-teacher vs teacher "
    "similarities",
    options={"weight": 5.0, "top_k": Num(256, 2, why=_TOP_K),
             "student_temperature": Num(1.0, 0.001, 10.0, why="a softmax temperature"),
             "teacher_temperature": Num(0.01, 0.001, 10.0, why="a softmax temperature")},
    sources={"weight": "AIR-Distiller MSMT17 config CSD.yaml (KD_WEIGHT 5; config/defaults.py: 1); to be tuned",
             "top_k": "AIR-Distiller MSMT17 config CSD.yaml (256, its whole distillation batch; "
                      "config/defaults.py: 96); ours: at most the batch",
             "student_temperature": "AIR-Distiller config/defaults.py and CSD.yaml (TEMPERATURE_QUERY 1)",
             "teacher_temperature": "AIR-Distiller config/defaults.py and CSD.yaml (TEMPERATURE_GALLERY 0.01)"})

DISTILLERS.add(
    "d3still", "reid_kd.distill.d3still:D3still",
    "D3still (Xie et al., CVPR 2024): the teacher's top-1 similarity, hard and simple differential relations of "
    "its top-k",
    options={"weight_top1": 50.0, "weight_hard": 2.0, "weight_simple": 1.0,
             "top_k": Num(10, 3, why=_TOP_K + "; the relations need two besides it")},
    sources={"weight_top1": "AIR-Distiller MSMT17 config D3.yaml and config/defaults.py (ALPHA 50, KD_WEIGHT 1); "
                            "to be tuned",
             "weight_hard": "AIR-Distiller MSMT17 config D3.yaml and config/defaults.py (BETA 2); to be tuned",
             "weight_simple": "AIR-Distiller MSMT17 config D3.yaml and config/defaults.py (GAMMA 1); to be tuned",
             "top_k": "AIR-Distiller MSMT17 config D3.yaml and config/defaults.py (TOPK 10)"})

DISTILLERS.add(
    "dkd", "reid_kd.distill.dkd:DKD",
    "DKD (Zhao et al., CVPR 2022): decoupled target-class and non-target-class KD",
    options={"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_steps": 0},
    sources={"alpha": "mdistiller CIFAR-100 (1)", "beta": "mdistiller CIFAR-100 (8)",
             "temperature": "mdistiller CIFAR-100 (4)",
             "warmup_steps": "ours: off (mdistiller ramps over 20 epochs; epochs differ by dataset)"})

DISTILLERS.add(
    "fitnet", "reid_kd.distill.fitnet:FitNet",
    "FitNet (Romero et al., ICLR 2015): MSE hint on an intermediate map through a conv regressor",
    options={"weight": 10.0, "hint_layer": _stage(2)},
    sources={"weight": "ours: RepDistiller's β = 100 sends 12-26× the re-ID gradient here; ÷10",
             "hint_layer": "ours: stage 3, the middle of a 4-stage backbone (RepDistiller: 2, its 2nd of 3 stages)"})

DISTILLERS.add(
    "gird", "reid_kd.distill.gird:GIRD",
    "GIRD (Hu et al., NCA 2024): student-vs-teacher relations to the batch and a teacher memory, and their "
    "evolution across layers",
    options={
        "weight_sim": 200.0,
        "weight_evo": 5.0,
        "layers": Typed(list, [2, 3, 4], optional=False, item=int),
        "stage_form": Choice("attention", "pooled"),
        "embedding": Choice("bn_feat", "global_feat"),
        "relation": Choice("cross", "self"),
        "use_memory": True,
        "memory_size": Num(1024, 1),
        "use_evolution": True,
        "evolution_memory_weight": Num(1.0, 0.0),
        "loss": Choice("kl", "mse"),
        "temperature": Num(0.05, 0.001, 10.0, why="a softmax temperature"),
        "teacher_temperature": Typed(float, None, low=0.001, high=10.0, why="a softmax temperature"),
        "top_k": Typed(int, None, low=2, why="a softmax over one column is constant"),
        "mask_self": True,
    },
    sources={
        "weight_sim": "ours: gradient window (the T²-scaled KL at T = 0.05 sends 0.002× the re-ID gradient at 1, "
                      "0.34× at 200); to be tuned",
        "weight_evo": "ours: gradient window (0.048× at 1, under its 0.05; 0.24× at 5); to be tuned",
        "layers": "DEAP VeRi_PR/model/backbones/student_resnet.py (stages 3 and 4), then the embedding "
                  "(D3still AIR_Distiller/distillers/D3.py)",
        "stage_form": "DEAP VeRi_PR/loss/MKD.py (attention maps, the larger pooled to the smaller: no width "
                      "adapter)",
        "embedding": "D3still AIR_Distiller/distillers/D3.py (L2-normalised retrieval_feat, after a BN)",
        "relation": "DEAP VeRi_PR/loss/MKD.py, D3still distillers/D3.py (student against teacher); "
                    "self: the earlier reading, ours",
        "use_memory": "paper (feature reutilisation); CDD MSMT/processor/utils_GRG.py (teacher features only)",
        "memory_size": "ours: 16 batches, below one epoch of the synthetic sets (the quickstart's 1,500 images, "
                       "synth_cpu's 2,100); a multiple of the batch as CDD utils_GRG.py asserts",
        "use_evolution": "paper (relation evolution); MBDL (VCIP 2020, two layers' matching behaviour by L1)",
        "evolution_memory_weight": "ours: 1, a memory column's entries weigh as a batch column's (the mean over "
                                   "every column); 0 leaves the memory out of the evolution term",
        "loss": "AIR-Distiller distillers/CSD.py (KL over the teacher's neighbours at a sharp teacher "
                "temperature)",
        "temperature": "ours: the student's, and the teacher's where teacher_temperature is null; the KL is "
                       "scaled by its square (CSD.py: student 1, unscaled)",
        "teacher_temperature": "ours: null, the student's temperature (one for both); AIR-Distiller "
                               "distillers/CSD.py: 0.01 for the teacher against 1 for the student",
        "top_k": "ours: null, every batch and memory column; AIR-Distiller distillers/CSD.py: the teacher's k "
                 "nearest columns (an image against itself masked first, as mask_self)",
        "mask_self": "D3still distillers/D3.py (a row's top teacher similarity, itself, left out); by dataset "
                     "index, ours",
    },
    batch_multiples=("memory_size",))

DISTILLERS.add(
    "irg", "reid_kd.distill.irg:IRG",
    "IRG (Liu et al., CVPR 2019): instance vertices, distance edges and in-stage transformations",
    options={
        "weight_vertex": 0.0,
        "weight_edge": 0.05,
        "weight_transform": 0.05,
        "edge_layers": Typed(list, [4], optional=False, item=int),
        "transform_stages": _stages([1, 2, 3]),
        "embedding": Choice("global_feat", "bn_feat"),
    },
    sources={
        "weight_vertex": "official Caffe release (no vertex loss)",
        "weight_edge": "ours: the official Caffe release's 0.005 ×10 (inert early in training here)",
        "weight_transform": "ours: the release's 0.005 ×10, as weight_edge",
        "edge_layers": "ours: the embedding, as the release's last pooled layer",
        "transform_stages": "ours: the stages after the stem",
        "embedding": "ours: the pooled pre-neck feature",
    })

DISTILLERS.add(
    "kd", "reid_kd.distill.kd:KD",
    "KD (Hinton et al., 2015): KL between temperature-softened ID logits",
    options={"weight": 1.0, "temperature": 4.0},
    sources={"weight": "ours: the re-ID losses stay at full weight, so KD enters at 1 (RepDistiller: 0.9 beside "
                       "CE 0.1)",
             "temperature": "RepDistiller and mdistiller KD default (4)"})

DISTILLERS.add(
    "pkt", "reid_kd.distill.pkt:PKT",
    "PKT (Passalis & Tefas, ECCV 2018): KL between cosine-kernel conditional probabilities",
    options={"weight": 10000.0, "eps": 1e-7, "embedding": Choice("bn_feat", "global_feat")},
    sources={"weight": "ours: RepDistiller's β = 30000 sends up to 22× the re-ID gradient here; ÷3",
             "eps": "authors' code (1e-7)",
             "embedding": "ours: the retrieval feature, whose scale the BN neck holds (on global_feat PKT fades)"})

DISTILLERS.add(
    "raml", "reid_kd.distill.raml:RAML",
    "RAML (Suma & Tolias, WACV 2023): student-teacher cosine regression, student-teacher and student-student "
    "relations",
    options={"weight": 5.0, "lambda_ts": Num(0.7482, 0.0), "lambda_ss": Num(0.6778, 0.0),
             "eps": Num(1e-6, 0.0, 1e-3, why="a shift inside the square")},
    sources={"weight": "AIR-Distiller MSMT17 config RAML.yaml (KD_WEIGHT 5; config/defaults.py: 1); to be tuned",
             "lambda_ts": "AIR-Distiller config/defaults.py and RAML.py (LAMBDA1 0.7482)",
             "lambda_ss": "AIR-Distiller config/defaults.py and RAML.py's SecondOrderLoss (LAMBDA2 0.6778; "
                          "RAML.py's distiller passes LAMBDA1 for it)",
             "eps": "AIR-Distiller RAML.py (1e-6, added to each difference before squaring)"})

DISTILLERS.add(
    "rkd", "reid_kd.distill.rkd:RKD",
    "RKD (Park et al., CVPR 2019): distance- and angle-wise relations of the embeddings",
    options={"weight_distance": 25.0, "weight_angle": 50.0, "embedding": Choice("global_feat", "bn_feat")},
    sources={"weight_distance": "paper's λ_D (25)", "weight_angle": "paper's λ_A (50)",
             "embedding": "ours: the pooled pre-neck feature (the paper's final embedding)"})

DISTILLERS.add(
    "rop", "reid_kd.distill.rop:ROP",
    "ROP (Wu et al., ICLR 2023): rank-order preservation over the teacher's top-k by sigmoid indicators",
    options={"weight": 0.5, "top_k": Num(256, 2, why=_TOP_K),
             "temperature": Num(0.1, 1e-6, 10.0, why="a sigmoid temperature"),
             "rank_weight": Num(0.2, 0.0)},
    sources={"weight": "AIR-Distiller MSMT17 config ROP.yaml (KD_WEIGHT 0.5; config/defaults.py: 1); to be tuned",
             "top_k": "AIR-Distiller MSMT17 config ROP.yaml (256, its whole distillation batch; "
                      "config/defaults.py: 96); ours: at most the batch",
             "temperature": "AIR-Distiller config/defaults.py and ROP.yaml (TEMPERATURE 0.1)",
             "rank_weight": "AIR-Distiller config/defaults.py and ROP.yaml (RANK_WEIGHT 0.2)"})

DISTILLERS.add(
    "sp", "reid_kd.distill.sp:SP",
    "SP (Tung & Mori, ICCV 2019): row-normalised batch similarity of a stage map",
    options={"weight": 3000.0, "layer": _stage(3)},
    sources={"weight": "paper's γ for CIFAR, also RepDistiller's β (3000)",
             "layer": "RepDistiller (the last stage map, feat[-2])"})

DISTILLERS.add(
    "ugd", "reid_kd.distill.ugd:UGD",
    "UGD (Zhang et al., Neural Networks 2025): retrieval features, and local features where the teacher's "
    "classifier is right",
    options={"weight_global": 1.0, "weight_local": 2.0, "student_layer": _stage(2)},
    sources={"weight_global": "AIR-Distiller MSMT17 config UGD.yaml (ALPHA 1, KD_WEIGHT 1; config/defaults.py: 2); "
                              "to be tuned",
             "weight_local": "AIR-Distiller MSMT17 config UGD.yaml and config/defaults.py (BETA 2); to be tuned",
             "student_layer": "AIR-Distiller UGD.py (DISTILLATION_LAYER 3, its 1-based layer3: our stage 2)"})


def describe_methods() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered method, sorted by name."""
    return [(name, DISTILLERS[name].description) for name in DISTILLERS]
