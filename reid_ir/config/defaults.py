"""Every configuration key, with one comment each.

Each section is declared once, with all its keys. Inside a section, the keys under
"torchreid's keys" reproduce deep-person-reid's ``scripts/default_config.py`` key
for key (same names, same defaults), so a YAML written for torchreid loads
unchanged; the keys under "reid_ir's keys" are this plugin's additions. A
section headed "(torchreid)" or "(reid_ir)" is entirely that side's.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------- model
_C.model = CN()
# torchreid's keys:
# Backbone name in torchreid's model zoo (osnet_x0_25, resnet50, ...).
_C.model.name = "resnet50"
# Load ImageNet weights for the backbone (needs internet the first time).
_C.model.pretrained = True
# Path to model weights to load before training or for --eval-only.
_C.model.load_weights = ""
# Path to a checkpoint to resume from (same as the CLI's --resume PATH).
_C.model.resume = ""
# reid_ir's keys:
# Neck between the backbone and every loss: bnneck (pooled feature, no ReLU -> BN with a frozen
# bias, as BoT / fast-reid), linear_bn (Linear to model.embedding_dim -> BN) or none (the
# backbone's output as torchreid returns it: non-negative for osnet_*; reproduces old runs).
_C.model.neck = "bnneck"
# Embedding size of the linear_bn neck (0 with the other necks).
_C.model.embedding_dim = 0

# ----------------------------------------------------------------------- data
_C.data = CN()
# torchreid's keys:
# Dataset type; only 'image' is supported by reid_ir.
_C.data.type = "image"
# Folder that holds one sub-folder per dataset (market1501/, dukemtmc-reid/, ...).
_C.data.root = "reid-data"
# Training datasets by torchreid name (market1501, dukemtmcreid, market1501_imb, synthetic_market, ...).
_C.data.sources = ["market1501"]
# Evaluation datasets by torchreid name.
_C.data.targets = ["market1501"]
# Number of data loading worker processes.
_C.data.workers = 4
# Split index (for datasets with several splits).
_C.data.split_id = 0
# Input image height in pixels.
_C.data.height = 256
# Input image width in pixels.
_C.data.width = 128
# Train on train + query + gallery (torchreid's combineall).
_C.data.combineall = False
# Training augmentations (torchreid names: random_flip, random_crop, random_erase, color_jitter, ...).
_C.data.transforms = ["random_flip"]
# Number of independent augmentations of each training image.
_C.data.k_tfm = 1
# Normalisation mean (ImageNet's by default).
_C.data.norm_mean = [0.485, 0.456, 0.406]
# Normalisation std (ImageNet's by default).
_C.data.norm_std = [0.229, 0.224, 0.225]
# Output folder: logs, merged config, checkpoints, metrics, plots.
_C.data.save_dir = "log"
# Also load the target datasets' training sets (unused by reid_ir's engine).
_C.data.load_train_targets = False
# reid_ir's keys:
# Check every image once at start and skip (and count) unreadable ones, instead of stopping at the first with an error naming it.
_C.data.skip_corrupt = False

_C.data.synthetic = CN()
# Synthetic data: identities in the training split.
_C.data.synthetic.num_train_ids = 40
# Synthetic data: identities in query/gallery.
_C.data.synthetic.num_test_ids = 40
# Synthetic data: images per identity per camera in the training split.
_C.data.synthetic.images_per_camera = 3
# Synthetic data: number of cameras.
_C.data.synthetic.num_cameras = 4
# Synthetic data: gallery distractor images (Market pid 0).
_C.data.synthetic.num_distractors = 20
# Synthetic data: gallery junk images (Market pid -1).
_C.data.synthetic.num_junk = 10
# Synthetic data: image size as (height, width).
_C.data.synthetic.image_size = [128, 64]
# Synthetic data: generator seed.
_C.data.synthetic.seed = 0

_C.data.imbalance = CN()
# Imbalance profile of the training identities: full, long_tail, tail_fewshot, balanced_control.
_C.data.imbalance.profile = "full"
# Path to a split manifest JSON (overrides the profile keys below when set).
_C.data.imbalance.manifest = ""
# Seed of the split (which identities become head or tail).
_C.data.imbalance.seed = 0
# long_tail: imbalance ratio rho = n_max / n_min.
_C.data.imbalance.rho = 10.0
# long_tail: image count of the largest identity (0: the largest the training set can supply for this rho).
_C.data.imbalance.n_max = 0
# long_tail: floor on any identity's image count.
_C.data.imbalance.min_images = 1
# tail_fewshot: fraction of identities reduced to few shots, in (0, 1].
_C.data.imbalance.tail_fraction = 0.5
# tail_fewshot: images kept per tail identity.
_C.data.imbalance.tail_images = 2
# Validation: hold out this many training identities (seeded by data.imbalance.seed) as query/gallery
# (one query image per camera, Market's rule); the split is made from the rest and the *_imb
# dataset evaluates on them instead of the test set. 0: off. For choosing settings, never the test set.
_C.data.imbalance.val_ids = 0
# balanced_control: the profile (long_tail or tail_fewshot, built from these same keys) whose ids and image count it matches.
_C.data.imbalance.control_of = "long_tail"
# Identity half the split is drawn from: '' (all), 'P' or 'F' (fixed hash halves, warm-start protocol; docs/splits.md).
_C.data.imbalance.id_half = ""

# ------------------------------------------- market1501, cuhk03 (torchreid)
_C.market1501 = CN()
# Add Market-1501's 500k distractors to the gallery.
_C.market1501.use_500k_distractors = False
_C.cuhk03 = CN()
# CUHK03: use labelled (True) or detected (False) boxes.
_C.cuhk03.labeled_images = False
# CUHK03: use the classic 20-split protocol.
_C.cuhk03.classic_split = False
# CUHK03: evaluate with CUHK03's single-gallery-shot metric.
_C.cuhk03.use_metric_cuhk03 = False

# ------------------------------------------------------- sampler (torchreid)
_C.sampler = CN()
# Training sampler: RandomSampler, RandomIdentitySampler, SequentialSampler,
# RandomDomainSampler, RandomDatasetSampler (torchreid) or ClassBalancedSampler (reid_ir).
_C.sampler.train_sampler = "RandomSampler"
# Sampler of the target training loader (unused by reid_ir's engine).
_C.sampler.train_sampler_t = "RandomSampler"
# Images per identity in a batch (RandomIdentitySampler, ClassBalancedSampler).
_C.sampler.num_instances = 4
# Cameras per batch (RandomDomainSampler).
_C.sampler.num_cams = 1
# Datasets per batch (RandomDatasetSampler).
_C.sampler.num_datasets = 1

# --------------------------------------------------------- video (torchreid)
_C.video = CN()
# Video re-ID: images sampled per tracklet (kept for YAML compatibility).
_C.video.seq_len = 15
# Video re-ID: how to sample a tracklet (kept for YAML compatibility).
_C.video.sample_method = "evenly"
# Video re-ID: how to pool a tracklet (kept for YAML compatibility).
_C.video.pooling_method = "avg"

# ---------------------------------------------------------------------- train
_C.train = CN()
# torchreid's keys:
# Optimizer: adam, amsgrad, sgd, rmsprop, radam (torchreid.optim).
_C.train.optim = "adam"
# Base learning rate.
_C.train.lr = 0.0003
# Weight decay.
_C.train.weight_decay = 5e-4
# Number of training epochs.
_C.train.max_epoch = 60
# First epoch (set automatically on resume).
_C.train.start_epoch = 0
# Training batch size.
_C.train.batch_size = 32
# Epochs during which only train.open_layers are trained.
_C.train.fixbase_epoch = 0
# Layers trained during the fixbase epochs.
_C.train.open_layers = ["classifier"]
# Give train.new_layers the base lr and the rest base_lr_mult x lr.
_C.train.staged_lr = False
# Layers that get the full lr when staged_lr is on.
_C.train.new_layers = ["classifier"]
# lr multiplier of the pretrained layers when staged_lr is on.
_C.train.base_lr_mult = 0.1
# LR scheduler: single_step, multi_step, cosine.
_C.train.lr_scheduler = "single_step"
# Epochs at which the lr decays (step schedulers).
_C.train.stepsize = [20]
# LR decay factor.
_C.train.gamma = 0.1
# Log the training losses every this many iterations.
_C.train.print_freq = 20
# Random seed (python, numpy, torch).
_C.train.seed = 1
# reid_ir's keys:
# Use deterministic algorithms and single-process data order (bit-exact resume tests).
_C.train.deterministic = False
# Save a checkpoint every this many epochs (the last epoch is always saved).
_C.train.checkpoint_period = 1
# Checkpoints kept on disk besides the latest (0: keep all).
_C.train.keep_checkpoints = 2
# Also save a checkpoint every this many iterations within an epoch (0: only at epoch ends); resume continues mid-epoch.
_C.train.checkpoint_iters = 0
# torch.distributed: minutes a rank waits for the others (e.g. while rank 0 evaluates) before failing.
_C.train.dist_timeout_minutes = 120
# Torch intra-op threads (0: torch's default).
_C.train.num_threads = 0
# Stop when the loss becomes NaN or inf (keeps the last good checkpoint).
_C.train.stop_on_nan = True
# Mixed precision: the backbone under autocast (bf16 on CPU and bf16-capable GPUs, else fp16 + GradScaler); the loss stays float32.
_C.train.amp = False
# Keep the backbone's weights and input images in channels_last (NHWC) memory format.
_C.train.channels_last = False

# --------------------------------------------- sgd, rmsprop, adam (torchreid)
_C.sgd = CN()
# SGD / RMSprop momentum.
_C.sgd.momentum = 0.9
# SGD dampening.
_C.sgd.dampening = 0.0
# SGD Nesterov momentum.
_C.sgd.nesterov = False
_C.rmsprop = CN()
# RMSprop smoothing constant.
_C.rmsprop.alpha = 0.99
_C.adam = CN()
# Adam beta1.
_C.adam.beta1 = 0.9
# Adam beta2.
_C.adam.beta2 = 0.999

# ----------------------------------------------------------------------- loss
_C.loss = CN()
# torchreid's keys:
# Loss name in reid_ir's loss registry (softmax, softmax_triplet, am_softmax, ir_am_softmax, ...).
_C.loss.name = "softmax"
_C.loss.softmax = CN()
# torchreid's switch for label smoothing; False sets every head's smoothing to 0 (see loss.label_smooth).
_C.loss.softmax.label_smooth = True
_C.loss.triplet = CN()
# Triplet margin (hard-mining triplet loss, euclidean distance).
_C.loss.triplet.margin = 0.3
# Weight of the triplet term in softmax_triplet.
_C.loss.triplet.weight_t = 1.0
# Weight of the cross-entropy term in softmax_triplet (torchreid's default is 0; 1 is the BoT
# recipe, so the logged cross-entropy is in the loss).
_C.loss.triplet.weight_x = 1.0
# reid_ir's key in torchreid's loss.triplet: weight of a batch-hard triplet term added to any
# loss.name (0: none; softmax_triplet has its own).
_C.loss.triplet.weight = 0.0
# reid_ir's keys:
# Label smoothing epsilon of every classification head (softmax, weighted, cosine/margin heads,
# IR, UNPG, CLMLE's softmax term), torchreid's 0.1 for all so the heads compare fairly.
_C.loss.label_smooth = 0.1

_C.loss.margin = CN()
# Scale s of normalised heads (NormFace, CosFace, ArcFace, SphereFace).
_C.loss.margin.scale = 30.0
# CosFace / AM-Softmax additive cosine margin m.
_C.loss.margin.m = 0.35
# ArcFace additive angular margin in radians.
_C.loss.margin.arc_m = 0.5
# SphereFace multiplicative angular margin (integer).
_C.loss.margin.sphere_m = 4
# SphereFace: scale logits by the feature norm |x| (original A-Softmax); False normalises features and uses loss.margin.scale.
_C.loss.margin.sphere_feature_norm = True
# SphereFace lambda annealing: lambda = max(lambda_min, base * (1 + gamma * it) ** -power).
_C.loss.margin.sphere_lambda_base = 1000.0
# SphereFace lambda annealing gamma.
_C.loss.margin.sphere_lambda_gamma = 0.12
# SphereFace lambda annealing power.
_C.loss.margin.sphere_lambda_power = 1.0
# SphereFace lambda floor.
_C.loss.margin.sphere_lambda_min = 5.0

_C.loss.ir = CN()
# Center update rule of IR heads (named 'rule': 'update' would shadow CfgNode.update): ema,
# count_ema (ema with a per-epoch momentum, so rarely sampled classes do not lag), epoch_mean
# (mean of the class's features since the epoch started), center_loss or exact (class means
# recomputed over the training set every epoch). ema was best on validation identities;
# docs/losses.md compares them.
_C.loss.ir.rule = "ema"
# ema: momentum mu in c <- mu c + (1 - mu) batch-mean.
_C.loss.ir.momentum = 0.9
# count_ema: momentum mu_e per epoch; a class seen a times in its last epoch uses mu_e ** (1 / a)
# per appearance, so every class keeps mu_e of its epoch-old center.
_C.loss.ir.epoch_momentum = 0.5
# center_loss: step alpha in c <- c - alpha sum(c - x) / (1 + n).
_C.loss.ir.alpha = 0.5
# Epochs that classify with learned class weights (as the head's twin does) while the centers
# are tracked; then the centers become the weights. 0: centers from the first step.
_C.loss.ir.warmup_epochs = 0

_C.loss.weighted = CN()
# Class weights of weighted_softmax: inverse (n_c ** -beta) or effective (Cui et al., 2019).
_C.loss.weighted.rule = "inverse"
# inverse rule exponent beta.
_C.loss.weighted.beta = 1.0
# effective-number rule gamma.
_C.loss.weighted.gamma = 0.999

_C.loss.unpg = CN()
# Wrap the head named by loss.name with UNPG (same as the unpg_ prefix).
_C.loss.unpg.enabled = False
# Box-and-whisker width w: keep negatives in [Q1 - w IQR, Q3 + w IQR].
_C.loss.unpg.whisker = 1.5
# All-gather embeddings across ranks for the metric-loss pairs.
_C.loss.unpg.gather = False

_C.loss.clmle = CN()
# Clusters per class (fewer for classes with fewer images).
_C.loss.clmle.clusters_per_class = 3
# Re-cluster every this many epochs.
_C.loss.clmle.refresh_epochs = 1
# Angular margin between a sample's cluster and the other clusters of its class (radians).
_C.loss.clmle.margin_within = 0.1
# Angular margin between a sample's cluster and the nearest cluster of another class (radians).
_C.loss.clmle.margin_between = 0.2
# Weight of the softmax term added to the CLMLE loss (0: none).
_C.loss.clmle.softmax_weight = 1.0
# k of the k-nearest-cluster classifier.
_C.loss.clmle.knc_k = 5
# Images per cluster a class needs to get more than one cluster (1 image -> 1 cluster).
_C.loss.clmle.min_cluster_size = 4
# Spherical k-means iterations per class at every refresh.
_C.loss.clmle.kmeans_iters = 20
# Base k-means seed (class c uses kmeans_seed + c), so clusters are reproducible.
_C.loss.clmle.kmeans_seed = 0

# ----------------------------------------------------------------------- test
_C.test = CN()
# torchreid's keys:
# Feature-extraction batch size.
_C.test.batch_size = 100
# Distance: euclidean or cosine.
_C.test.dist_metric = "euclidean"
# L2-normalise features before computing distances.
_C.test.normalize_feature = False
# CMC ranks to report.
_C.test.ranks = [1, 5, 10, 20]
# Evaluate only (same as the CLI's --eval-only).
_C.test.evaluate = False
# Evaluate every this many epochs (-1: only after the last epoch).
_C.test.eval_freq = -1
# First epoch at which periodic evaluation starts.
_C.test.start_eval = 0
# Apply k-reciprocal re-ranking (Zhong et al., 2017).
_C.test.rerank = False
# Write ranked-result images for some queries.
_C.test.visrank = False
# Gallery images shown per query in visrank.
_C.test.visrank_topk = 10
# reid_ir's keys:
# Which side of the neck retrieval reads: after_bn (the features the loss sees) or before_bn.
_C.test.feature = "after_bn"
# Search backend: auto (faiss when faiss reports a GPU, torch otherwise), faiss or torch.
_C.test.backend = "auto"
# Queries per evaluation chunk (bounds memory).
_C.test.chunk_size = 1024
# Largest CMC rank computed.
_C.test.max_rank = 50
# k-reciprocal re-ranking k1.
_C.test.rerank_k1 = 20
# k-reciprocal re-ranking k2.
_C.test.rerank_k2 = 6
# k-reciprocal re-ranking lambda.
_C.test.rerank_lambda = 0.3
# Number of queries written by visrank.
_C.test.visrank_num = 20
# Also report closed-set kNC accuracy on the training identities (CLMLE).
_C.test.knc = False

# ------------------------------------------------ use_gpu, diagnostics (reid_ir)
# Use CUDA when available; set False to force the CPU.
_C.use_gpu = True

_C.diagnostics = CN()
# Record the angle between each class weight and its feature center every epoch.
_C.diagnostics.weight_center_angle = True
# Classes with at least this quantile of image counts count as 'head' in the summaries.
_C.diagnostics.head_quantile = 0.8


def get_cfg() -> CN:
    """Return a fresh copy of the default configuration."""
    return _C.clone()
