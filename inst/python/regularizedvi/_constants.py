"""Every default of regularizedvi, stated once.

Docstrings quote these values; tests check that the two agree. Change a default here
and nowhere else.
"""

from __future__ import annotations

import math

# ---- network sizes (scvi-tools' defaults, so results compare like for like) ----
N_HIDDEN = 128
N_LATENT = 10
N_LAYERS = 1
DROPOUT_RATE = 0.1
LIBRARY_N_HIDDEN = 16  # the library encoder is deliberately low-capacity (spec, mod. 5)
VAR_EPS = 1e-4  # floor on encoder variances
# Categorical covariates (decoder's nn_conditioning, encoder covariates) enter each layer
# through weight columns stored at 1 / COVARIATE_WEIGHT_GAIN of their effect and multiplied
# back in the forward pass (an "equalised learning rate"): Adam moves a per-category weight
# this many times faster than a network weight (more where Adam's eps=0.01 dominates). Each
# category's weights are pooled over all its cells but would otherwise take most of a
# 400-epoch run on a small dataset to reach their values, leaving the sample effect in the
# latent meanwhile (kang, scib-metrics, seeds 0-1: total 0.767 / 0.773 -> 0.789 / 0.790,
# batch correction +0.05, biological conservation within 0.01; bench/README.md).
COVARIATE_WEIGHT_GAIN = 3.0
# The library posterior q(log l) starts as a near-point mass at the observed log total:
# variance LIBRARY_POSTERIOR_INIT_VAR + VAR_EPS (sd ~0.014, about the Poisson precision of
# a 5000-count total). Started at the default unit variance, the sampled library is noisy
# for the first ~100 epochs and the latent absorbs sample depth (kang, 150 epochs:
# sample-mixing entropy 0.70 vs 0.75 with this start; bench/ablation.py).
LIBRARY_POSTERIOR_INIT_VAR = 1e-4

# ---- priors (spec "regularizedvi generative model") ----
# Additive background. "profile" (default): s_e = a_e q_e, a fixed profile q_e per ambient
# category (its cells' mean observed profile, or a measured empty-droplet profile given as
# ambient_profile=) times a learned amount a_e; "free": the spec's s_{e,g} = exp(beta_{e,g}),
# one free value per feature and category. Without empty droplets a flexible decoder can
# explain any share of the soup as expression; measured on semi-synthetic designs with known
# contamination (bench/ambient_bench.py), a free background removed a tenth to a fifth of it,
# and pushing a free background to the data's floor over-corrects every gene expressed in all
# cells, while the profile background with the two terms below recovers each group's amount.
AMBIENT_BACKGROUND = "profile"
# Per-cell scale c_n = exp(h(x_n)) of the background (nn.AmbientScaleEncoder) with a
# LogNormal(0, AMBIENT_SCALE_SD) prior: the soup captured varies from droplet to droplet, and
# without it the latent carries that spread.
AMBIENT_CELL_SCALE = True
AMBIENT_SCALE_SD = 0.5
AMBIENT_SCALE_N_HIDDEN = 16
# Native-share penalty NATIVE_SHARE_PENALTY * N_n ** NATIVE_SHARE_POWER * sum_g rho_ng per cell
# (N_n its total count, sum_g rho_ng its share of counts explained as its own expression):
# among the explanations that fit equally, the one that leaves to the background what is
# shared by all cells of an ambient group; 0 switches it off. Its strength grows with depth:
# a constant strength over-corrected shallow and under-corrected deep data, and the square
# root (0.17 sqrt(N_n), model files of format 3) still left too little to the background in
# deep data and too much in shallow. 0.024 N^0.75 equals 0.17 sqrt(N) at N ~ 2,000. On the six
# semi-synthetic designs of bench/ambient_bench.py (3 seeds), against the square root:
# fraction MAE 0.079 vs 0.090 (cellbench2 0.107 vs 0.139, snare16 0.052 vs 0.087, the other
# four within 0.005), count error lower or within 0.0035 on every design
# (bench/records/ambient/ambient_l1p.md); held-out NLL within 0.1% on five designs, +0.2% on
# cellbench2 (bench/records/ambient/heldout_l1p.md).
NATIVE_SHARE_PENALTY = 0.024
NATIVE_SHARE_POWER = 0.75
# Ambient adversary (off by default): a classifier on the latent mean predicts each cell's
# ambient group, trained through a gradient reversal, and AMBIENT_ADVERSARY x its
# cross-entropy joins the loss; the encoder thereby keeps the group out of z. Without it the
# latent carries the sample, the batch-free decoder expresses each sample's soup, and the
# background recovers a compressed range of contamination. On the semi-synthetic designs of
# bench/ambient_bench.py a weight of 20 halves the fraction error with 2-4 samples (3 seeds)
# but costs kNN purity (0.035-0.049: cell types do differ between samples) and does not help
# with 16 samples or with the sample in the decoder. With labels_key (cell type, x condition
# where one differs between samples) the purity cost goes and a weight of 100 is best
# (fraction MAE 0.024-0.034, 3 seeds), except where a condition differs between samples in
# every cell type (a planted design: unstable, worse than off): see bench/README.md and the
# README's ambient section before turning it on. AMBIENT_ADVERSARY_N_HIDDEN: the classifier's width.
AMBIENT_ADVERSARY = 0.0
AMBIENT_ADVERSARY_N_HIDDEN = 32
# The background's Gamma(1, 100) prior (spec) is off unless asked for.
BACKGROUND_PRIOR_ALPHA = 1.0
BACKGROUND_PRIOR_BETA = 100.0
REGULARISE_BACKGROUND = False
# Initial background: this fraction of each ambient category's mean expression profile
# (flat over features when no profile is given). See AmbientRegularizedSCVI's docstring
# for why this is not exp(beta)=0.01.
BACKGROUND_INIT_FRACTION = 0.01
# Feature scaling y = softplus(gamma) / 0.7 ~ Gamma(200, 200) (mean 1).
FEATURE_SCALING_DIVISOR = 0.7
FEATURE_SCALING_PRIOR_ALPHA = 200.0
FEATURE_SCALING_PRIOR_BETA = 200.0
# Query mapping (load_query_data, single-modality model): the frozen z encoder reads
# log1p(x / r), log r = the query category's log feature scaling minus the reference
# categories' mean, centred over features (0 for reference categories: their latent is
# unchanged bit for bit); the query's new decoder covariate columns are pinned at the
# reference mean; the query's new feature-scaling rows get the loose Gamma(2, 2) prior
# (under Gamma(200, 200) their log y has sd 0.27 over genes and mixing gains +0.005).
# Measured (bench/mapping.py, rv+nn, 200/100 epochs, 3 seeds; bench/README.md): query->reference
# mixing cellbench 0.162 -> 0.204 (scVI 0.208), SNARE 0.616 -> 0.619 (scVI 0.646), label
# accuracy unchanged (0.983, 0.749); bench/records/quality/mapping_core_qin.md.
QUERY_INPUT_CORRECTION = True
QUERY_FEATURE_SCALING_PRIOR = 2.0
# Hierarchical dispersion prior: lambda ~ Gamma(9, 3); 1/sqrt(theta) ~ Exponential(lambda).
DISPERSION_RATE_PRIOR_ALPHA = 9.0
DISPERSION_RATE_PRIOR_BETA = 3.0
DISPERSION_RATE_INIT = DISPERSION_RATE_PRIOR_ALPHA / DISPERSION_RATE_PRIOR_BETA  # = 3
THETA_INIT = DISPERSION_RATE_INIT**2  # = 9, the prior's equilibrium 1/sqrt(theta) = 1/lambda
LOG_THETA_INIT = math.log(THETA_INIT)
DISPERSION_POSTERIOR_SIGMA_INIT = 0.1
# Library-size prior: LogNormal(mu_p, LIBRARY_PRIOR_VARIANCE_SCALE * sigma^2_p).
LIBRARY_PRIOR_VARIANCE_SCALE = 0.5

# ---- training ----
EARLY_STOPPING_MIN_DELTA_PER_FEATURE = 0.0002
MAX_EPOCHS_CAP = 400  # scvi-tools' heuristic: min(round(20000 / n_cells * 400), 400)
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-6
# Adam / AdamW use torch's fused kernel where the device has one (same update rule).
FUSED_OPTIMIZER = True
# KL warm-up: None = none (the KL weight is 1 from the first step). scvi-tools warms up over
# 400 epochs, which a run of fewer epochs never finishes; measured at 200 epochs, 3 seeds
# (bench/quality_multi.py, batch_key + nn_conditioning, variant wu0 vs the 400-epoch warm-up,
# scib total, commit 73ecca2): kang 0.784 vs 0.761, SNARE 0.641 vs 0.625, CellBench 0.814 vs 0.813 (bio 0.822
# vs 0.832), held-out NLL within 2 nats per cell; SNARE at 60 epochs
# (bench/multimodal_snare.py) RNA purity 0.665 vs 0.650, joint 0.649 vs 0.627; and the
# ambient amount is identified only without it (bench/ambient_bench.py). An int gives a
# warm-up over that many epochs (plan_kwargs={"n_epochs_kl_warmup": 400}: scvi-tools').
# Measured exception: a model of ATAC peaks alone (SNARE-seq, 3 seeds, 60 epochs) separates
# cell types better with the 400-epoch warm-up (purity 0.264, seed 0) than without (0.168).
N_EPOCHS_KL_WARMUP = None
# Training data path: "auto" (in-memory fast path when the data fit, "backed" for an on-disk
# AnnData), "fast", "backed" or "scvi".
DATA_LOADER = "auto"
# "auto" takes the fast path when its tensors (CSR counts + float32 covariates) use at most
# this fraction of the GPU's free memory / of the host's available memory.
FAST_LOADER_DEVICE_MEMORY_FRACTION = 0.5
FAST_LOADER_HOST_MEMORY_FRACTION = 0.5
# Data larger than memory (AnnData opened with backed="r"): the on-disk matrix is read in
# blocks of this many consecutive rows by the set-up checks, the model's initial statistics
# and the "backed" training path, never whole. One block of a 30k-gene atlas at ~3000 stored
# values per cell is ~25 MB (float32 values + int32 indices).
BACKED_BLOCK_ROWS = 1024
# Rows per block when initial statistics (per-category feature totals) are summed over an
# in-memory matrix: scipy copies a float32 block to float64 for the product, never the whole.
STATISTICS_BLOCK_ROWS = 16384
# The "backed" training path visits the blocks in a seeded random order and shuffles cells
# within groups of this many blocks (the rows held in memory at once: ~400 MB for the atlas
# above): a minibatch mixes cells from up to this many places in the file, not from all of it.
BACKED_SHUFFLE_BLOCKS = 16

# Training loop: "lightning" (scvi-tools' Trainer), "lean" (regularizedvi.model._lean_loop:
# the same steps and metrics without Lightning's per-step machinery; fast data path only)
# or "auto": lean when the fast path serves the data on one device and no Lightning-only
# option is given, Lightning otherwise.
TRAINING_LOOP = "auto"
# The lean loop on a CUDA device captures a full minibatch's step (forward, backward,
# optimizer) as a CUDA graph after this many ordinary steps, and replays it.
CUDA_GRAPH_TRAINING = True
CUDA_GRAPH_WARMUP_STEPS = 3

# The CPU likelihood reads lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) for integer
# counts 1..NB_COUNT_TABLE_SIZE from a per-step table (kang, SNARE RNA, pbmc_3chem: 71-83% of
# the nonzeros are <= 2, 84-91% <= 4), so lgamma and digamma run on the larger counts only.
NB_COUNT_TABLE_SIZE = 4

# ---- input checks ----
# How many stored values the count check reads (all of them up to this, a seeded sample beyond).
COUNT_CHECK_MAX_VALUES = 10_000_000
# A numeric (not categorical) obs column given as a categorical covariate is refused as a
# continuous measurement when it has non-integer values or more distinct values than this
# (or than half of the cells); convert it to a categorical explicitly if it really is one.
# The R package applies the same rule before Python starts (R/validate.R,
# .max_numeric_levels; a test checks the two agree).
MAX_NUMERIC_CATEGORIES = 50
# Global parameters (background, feature scaling, dispersion) are few and pooled over all
# cells, but Adam moves any parameter by about `lr` per step: they get a larger step so
# that they reach the data's values within a normal training run.
GLOBAL_LR_MULTIPLIER = 10.0

# ---- empty droplets (data/_empty_droplets.py) ----
# Barcodes of a raw 10x matrix with a total count in [MIN, MAX] are taken as empty droplets
# (SoupX's default soup range is 0-100 UMIs); fewer than MIN_DROPLETS in a group means the
# matrix looks filtered there.
EMPTY_DROPLET_MIN_COUNTS = 1
EMPTY_DROPLET_MAX_COUNTS = 100
EMPTY_DROPLET_MIN_DROPLETS = 100

# ---- label transfer (model/_label_transfer.py) ----
# k nearest reference cells per query cell; a query cell is flagged "unknown" when its
# winning label's weighted vote share is below MIN_CONFIDENCE or its mean neighbour distance
# exceeds MAX_DISTANCE_RATIO x the 99th percentile of the reference cells' own.
LABEL_TRANSFER_NEIGHBOURS = 15
LABEL_TRANSFER_MIN_CONFIDENCE = 0.5
LABEL_TRANSFER_MAX_DISTANCE_RATIO = 1.5

# ---- multimodal model (spec "RegularizedMultimodalVI generative model") ----
# Latent strategy: "concatenation" (per-modality encoders, slices concatenated, one KL per
# modality), "weighted_mean" (per-modality posteriors mixed by learned weights into one
# shared latent) or "single_encoder" (one joint encoder on all modalities' inputs).
LATENT_MODES = ("concatenation", "weighted_mean", "single_encoder")
MULTIMODAL_LATENT_MODE = "concatenation"
# Concatenation mode: the modality whose decoder reads only its own latent slice (the
# others read the whole latent). "first": the first modality of setup_mudata's order.
# Measured on SNARE-seq (bench/multimodal_snare.py, 3,500 nuclei, 60 epochs): joint 15-NN
# purity below an RNA-only model when every decoder reads everything, equal to it with RNA
# primary (scib bio conservation 0.014 below until the ATAC decoder stopped shaping the RNA
# slice, DETACH_PRIMARY below; docs/multimodal.md has the tables).
PRIMARY_MODALITY = "first"
# With a primary modality: the other decoders read its slice detached in training (it is
# trained by the primary likelihood alone), and the other slices' KL weighs
# SECONDARY_KL_WEIGHT. SNARE-seq, 3,500 nuclei, 60 epochs, 3 seeds (bench/multimodal_snare.py
# --scib, records bench/records/multimodal/primary_detach_kl2_scib.jsonl): see docs/multimodal.md.
DETACH_PRIMARY = True
SECONDARY_KL_WEIGHT = 2.0
# Modality names treated as chromatin accessibility (case-insensitive). Spec table of
# per-modality defaults: additive background ON for RNA-like modalities (RNA, protein/ADT:
# both carry ambient contamination), OFF for ATAC; feature scaling OFF for RNA-like, ON for
# ATAC (per-peak GC / mappability / peak-calling biases).
ATAC_LIKE_MODALITY_NAMES = ("atac", "chromatin", "accessibility", "peaks", "peak")
MULTIMODAL_BACKGROUND_RNA_LIKE = True
MULTIMODAL_BACKGROUND_ATAC_LIKE = False
MULTIMODAL_FEATURE_SCALING_RNA_LIKE = False
MULTIMODAL_FEATURE_SCALING_ATAC_LIKE = True
# Decoder attribution: cells per forward-mode (JVP) batch, and the finite-difference step
# (central differences, on the latent scale) used by method="finite_difference".
ATTRIBUTION_BATCH_SIZE = 256
# method="jvp" pushes all latent directions through the decoder at once (torch.func.vmap of
# one jvp) for chunks of cells holding about this many values of the (dims x cells x
# features) tangent (~32 MiB in float32): SNARE-seq 10,309 nuclei x 25,734 peaks + 1,677
# genes, 20 dims, 1 CPU thread: 38 s vs ~117 s one direction at a time (bench/multimodal_attribution.py).
ATTRIBUTION_CHUNK_ENTRIES = 2**23
ATTRIBUTION_FD_EPS = 1e-2
