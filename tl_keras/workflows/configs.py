"""The settings of every workflow, one dataclass a job, in one shape: the
job's own fields beside the shared groups `training` (`TrainingConfig`),
`splits`, `output` and `runtime`, each field's help in its metadata
(`tl_keras.core.settings`). The command line flattens them to flags
(`--epochs`, `--export-dir`), YAML `--config` files to the same names. No
TensorFlow import.

Example:
>>> config = TextClassificationConfig(train="reviews.tsv", backbone=minilm_l6_offline_path(),
...     output_dir="runs/reviews", training=TrainingConfig(epochs=2), output=OutputConfig(export_dir="export"))
>>> config.training.epochs, config.output.model_name
(2, 'text_classifier')
"""

import dataclasses
from typing import ClassVar

from tl_keras.core.choices import (ADAPTATION_METHODS, FEW_LABEL_METHODS, FUSIONS, GENERATOR_STRATEGY, IMAGE_STRATEGY,
                                   SPAN_STRATEGY, TEXT_STRATEGY, parse_strategy)
from tl_keras.core.ranges import check_settings
from tl_keras.core.settings import documented, refuse_unused, setting
from tl_keras.training.config import TrainingConfig

# The settings `TrainingConfig` has for fine-tuning a backbone with a transfer
# strategy, which jobs that train other things cannot apply.
STRATEGY_TRAINING = ("backbone_learning_rate", "layer_decay", "warmup_epochs", "jit_compile", "backup_dir")
# DP-SGD (`tl_keras.training.privacy`), planned by the trainer for `fit`: the
# text and image jobs only.
PRIVATE_TRAINING = ("dp_clip", "dp_noise", "dp_epsilon", "dp_delta")


@documented
@dataclasses.dataclass
class SplitsConfig:
    """Which rows validate and which test: files, or shares held out of the
    training file (stratified by label; whole articles for QA)."""

    validation: str = setting(None, "validation file (scored each epoch; the split to choose settings on); `None` "
                                    "holds out `validation_fraction` of `train`.")
    test: str = setting(None, "test file, scored once at the end and reported apart; `None` holds out "
                              "`test_fraction` of `train` first.")
    validation_fraction: float = setting(0.1, "the share of `train` (after the test share) held out for "
                                              "validation.")
    test_fraction: float = setting(0.2, "the share of `train` held out for testing.")

    def __post_init__(self):
        check_settings(self)


@documented
@dataclasses.dataclass
class OutputConfig:
    """What a run leaves beside its reports: a TF Serving SavedModel and a
    preset of the trained task."""

    export_dir: str = setting(None, "write a TF Serving SavedModel to `export_dir/model_name/<version>/`; `None` "
                                    "exports nothing.")
    model_name: str = setting("model", "the served model's name (its folder under `export_dir`).")
    save_preset: str = setting(None, "a new folder to save the trained task in as a preset (`from_preset` and "
                                     "`--backbone` load it), or `None`.")


@documented
@dataclasses.dataclass
class RuntimeConfig:
    """Where and how the run computes."""

    distribute: str = setting("auto", "`\"auto\"`, `\"none\"`, `\"mirrored\"` or `\"multi_worker\"` (see "
                                      "`tl_keras.training.distribution.pick_distribution`).")
    precision: str = setting("float32", "`\"float32\"`, `\"mixed_float16\"` or `\"mixed_bfloat16\"` (GPU only; "
                                        "float32 on a CPU).")

    def __post_init__(self):
        check_settings(self)


def _output(model_name):
    return setting(factory=lambda: OutputConfig(model_name=model_name), help="where the model goes (`OutputConfig`).")


def _training(**defaults):
    return setting(factory=lambda: TrainingConfig(**defaults), help="how to train (`TrainingConfig`); its "
                                                                    "`batch_size` is per replica.")


SPLITS = setting(factory=SplitsConfig, help="validation and test rows (`SplitsConfig`).")
RUNTIME = setting(factory=RuntimeConfig, help="distribution and precision (`RuntimeConfig`).")
RESUME = setting(True, "keep per-epoch backups in `output_dir/backup` so a killed run started again resumes where "
                       "it stopped; a restart with other data or settings stops, naming what changed.")
FRESH = setting(False, "discard backups of an earlier run with other settings and start again.")
AUDIT = setting(False, "report a membership-inference audit (loss-threshold and class-calibrated attacks: ROC AUC "
                       "and true-positive rate at 1% false positives, training rows against test rows) in "
                       "`metrics.json` (classification only).")
SEQUENCE_LENGTH = "token positions a text (longer texts are cut)."
POOLING = "`\"mean\"`, `\"cls\"`, `\"pooled\"`, or `None` for the backbone's default."
HIDDEN_DIM = "the head's hidden width (0: a linear head)."
DROPOUT = "the head's dropout rate."
TEXT_COLUMN = "the text column of a `.csv`/`.jsonl`."
LABEL_COLUMN = "the label column of a `.csv`/`.jsonl`."


@documented
@dataclasses.dataclass
class TextClassificationConfig:
    """Everything a text transfer run needs; `recipes/text_classification.py`
    fills it from flags or YAML.

    Example:
    >>> run(TextClassificationConfig(train="reviews.tsv", backbone=
    ...     minilm_l6_offline_path(), output_dir="runs/reviews"))
    """

    train: str = setting(help="training file (`.tsv`/`.txt`, `.csv`, `.jsonl`).")
    backbone: str = setting(help="a KerasHub preset (Kaggle handle or local folder).")
    output_dir: str = setting(help="where `metrics.json` and the plots go.")
    strategy: str = setting(TEXT_STRATEGY, "`\"frozen\"`, `\"partial:N\"`, `\"full\"` or `\"lora:R\"`.")
    task: str = setting("classification", "`\"classification\"`, `\"multilabel\"` or `\"regression\"`.")
    text_column: str = setting("text", TEXT_COLUMN)
    label_column: str = setting("label", LABEL_COLUMN)
    pair_column: str = setting(None, "the column of each row's second text, for text-pair tasks (query and title, "
                                     "question and answer, two listings); a `.tsv` then holds "
                                     "`text<TAB>text_pair<TAB>label`. The pair is packed as one sequence (`[CLS] "
                                     "text [SEP] text_pair [SEP]`) and the SavedModel takes `text` and `text_pair`. "
                                     "`None` for one text.")
    sequence_length: int = setting(128, SEQUENCE_LENGTH)
    pooling: str = setting(None, POOLING)
    hidden_dim: int = setting(0, HIDDEN_DIM)
    dropout: float = setting(0.1, DROPOUT)
    audit: bool = AUDIT
    resume: bool = RESUME
    fresh: bool = FRESH
    splits: SplitsConfig = SPLITS
    training: TrainingConfig = _training()
    output: OutputConfig = _output("text_classifier")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        if self.audit and self.task != "classification":
            raise ValueError(f"`audit` scores class probabilities: it needs task 'classification', received "
                             f"{self.task!r}.")


@documented
@dataclasses.dataclass
class ImageClassificationConfig:
    """Everything an image transfer run needs; `recipes/image_classification.py`
    fills it from flags or YAML. Unless `training.epochs` is given, `frozen`
    trains 30 epochs (on cached features, seconds an epoch) and the
    fine-tuning strategies 8 (as measured on the Grocery Store photos).

    Example:
    >>> run(ImageClassificationConfig(train="photos", backbone="presets/efficientnet_lite0",
    ...     output_dir="runs/photos"))
    """

    train: str = setting(help="a folder with one sub-folder of images per class, a `path,label` CSV, or an image "
                              "list (`path, fine_id, coarse_id` lines, the Grocery Store dataset's `train.txt`) "
                              "with its `classes.csv` catalogue beside it: then coarse accuracy and the fallback "
                              "to coarse classes are reported too.")
    backbone: str = setting(help="a KerasHub image preset (Kaggle handle, local preset folder, local timm folder, "
                                 "or one made by `tl-keras convert-efficientnet-lite`).")
    output_dir: str = setting(help="where `metrics.json` and the plots go.")
    strategy: str = setting(IMAGE_STRATEGY, "`\"frozen\"`, `\"partial:N\"` (top N stages) or `\"full\"`.")
    image_size: int = setting(None, "images are resized to `image_size` x `image_size`; `None` (the default) "
                                    "keeps the training photos' typical shorter side, at least the backbone's "
                                    "native resolution (Lite0 224, Lite1 240, Lite2 260; 224 when its preset does "
                                    "not say) and at most 1.5 times it.")
    augmentation: str = setting("none",
                                "comma-separated `flip`, `rotation`, `zoom`, `contrast`, `crop` (random resized "
                                "crops), `color` (colour jitter), `randaugment`, or `none` (the default, measured "
                                "best with `frozen`); training batches only. The frozen strategy's feature cache is "
                                "used only without it; `partial:2` was measured with `flip,zoom,contrast`.")
    test_time_augmentation: str = setting("none", "`flip` averages each image's features with its mirror image's "
                                                  "at inference (validation, test, the SavedModel; twice the "
                                                  "backbone's cost), or `none`.")
    skip_bad_images: bool = setting(False, "leave out unreadable or non-RGB images and report how many, instead "
                                           "of stopping at the first.")
    hidden_dim: int = setting(0, HIDDEN_DIM)
    dropout: float = setting(0.1, DROPOUT)
    audit: bool = AUDIT
    resume: bool = RESUME
    fresh: bool = FRESH
    splits: SplitsConfig = SPLITS
    training: TrainingConfig = _training(epochs=None)
    output: OutputConfig = _output("image_classifier")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        if str(self.strategy).startswith("lora"):
            raise ValueError(f"Strategy {self.strategy!r} needs a transformer backbone; use frozen, partial:N or "
                             "full.")
        if self.training.epochs is None:
            self.training = dataclasses.replace(self.training, epochs=30 if self.strategy == "frozen" else 8)


@documented
@dataclasses.dataclass
class RecommendationConfig:
    """Everything a recommendation run needs; `recipes/recommendation.py`
    fills it from flags or YAML. `epochs` is the most epochs: the number is
    chosen on validation.

    Example:
    >>> run(RecommendationConfig(interactions="clicks.csv", items="items.csv",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/shop"))
    """

    unused_settings: ClassVar[tuple] = STRATEGY_TRAINING + PRIVATE_TRAINING + ("shuffle",)

    interactions: str = setting(help="`user_id,item_id[,timestamp][,rating]` CSV.")
    items: str = setting(help="`item_id,text` CSV.")
    backbone: str = setting(help="a KerasHub text preset for the item tower.")
    output_dir: str = setting(help="where `metrics.json`, the table and the plot go.")
    users: str = setting(None, "optional `user_id,<feature>,...` CSV.")
    movielens: str = setting(None, "a local MovieLens-100k `ml-100k/` folder, converted to the three files under "
                                   "`output_dir` (command line only; the data may not be redistributed, so it never "
                                   "ships).")
    holdout: int = setting(2, "each user's most recent interactions held out for testing (and each user's last "
                              "training interaction is the validation slice on which epochs and EASE's λ are "
                              "chosen).")
    history_length: int = setting(20, "recent items the user tower reads.")
    history_pooling: str = setting("recency", "`\"recency\"` (a learned weight per position) or `\"mean\"` over "
                                              "the recent items.")
    sequence_length: int = setting(32, SEQUENCE_LENGTH)
    pooling: str = setting(None, POOLING)
    embedding_dim: int = setting(64, "the towers' output size.")
    text_hidden_dim: int = setting(256, "the hidden ReLU width of the item text projection (0: linear).")
    item_id_embedding: bool = setting(True, "add a learned id vector to the text tower (items unseen in training "
                                            "fall back to text alone).")
    id_dropout: float = setting(0.0, "the share of items whose id vector is left out in each training step, so "
                                     "text alone learns to place an item (and new items rank beside known ones).")
    user_id_embedding: bool = setting(True, "learn a vector per user id.")
    temperature: float = setting(0.1, "the initial softmax temperature (learned).")
    remove_accidental_hits: bool = setting(True, "mask duplicates of a positive among its in-batch negatives.")
    logq_correction: bool = setting(True, "subtract log sampling probability from the logits.")
    sampled_negatives: int = setting(0, "uniformly sampled negatives a step, beside the in-batch ones.")
    patience: int = setting(2, "epochs without a validation gain before stopping.")
    cold_start_items: float = setting(0.15, "the share of items moved wholly to the test side for the "
                                            "item-cold-start report (0 with `cold_start_users` 0 skips the "
                                            "cold-start split).")
    cold_start_users: float = setting(0.1, "the share of users left with `cold_start_keep` training interactions "
                                           "for the user-cold-start report.")
    cold_start_keep: int = setting(2, "training interactions a cold-start user keeps.")
    ks: str = setting("10,50", "the cut-offs for recall and NDCG, comma-separated.")
    top_k: int = setting(10, "items the exported retrieval SavedModel returns.")
    training: TrainingConfig = _training(epochs=10, batch_size=256, head_learning_rate=3e-3)
    output: OutputConfig = _output("retrieval")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)


@documented
@dataclasses.dataclass
class DomainAdaptationConfig:
    """A domain-adaptation run; `recipes/domain_adaptation.py` fills it.
    Fine-tuning routes train with `training` as `fit` does (3 epochs, 16
    texts a batch unless set); the frozen-feature adapter of DANN and CORAL
    takes 10 epochs and 32 rows a batch unless `epochs` or `batch_size` is
    set, and `head_learning_rate`.

    Example:
    >>> run(DomainAdaptationConfig(source="amazon.tsv", target="yelp.tsv", backbone=minilm_l6_offline_path(),
    ...     output_dir="runs/adapt", target_validation="yelp.tsv"))
    """

    unused_settings: ClassVar[tuple] = PRIVATE_TRAINING

    source: str = setting(help="labelled source-domain file.")
    target: str = setting(help="target-domain file; only its texts are used for training.")
    backbone: str = setting(help="a KerasHub preset.")
    output_dir: str = setting(help="where `metrics.json` (every method beside the source-only baseline) goes.")
    target_validation: str = setting(None, "labelled target file for the target metrics (`None` or `\"\"`: "
                                           "no target metrics; the run reports the share of target predictions "
                                           "the method changed from source-only's). When it is the `target` "
                                           "file itself, `target_test_fraction` of its rows (stratified) are the "
                                           "test and are left out of the unlabelled texts.")
    target_test_fraction: float = setting(0.25, "see `target_validation`.")
    method: str = setting("self_training", "`\"self_training\"` (fine-tunes with `strategy`, then trains on its "
                                           "own confident predictions on the target texts; measured best in "
                                           "`benchmarks/amazon_domains.py`; with `\"frozen\"`, an adapter over "
                                           "cached features), `\"dann\"` or `\"coral\"` "
                                           "(fine-tuned with `strategy` on the source and target texts at once; "
                                           "with `\"frozen\"`, an adapter over cached features), "
                                           "`\"source_then_target\"` or `\"joint\"` (with `target_labelled`), or "
                                           "`\"source_only\"` (the baseline alone). The source-only baseline always "
                                           "runs with the same strategy and settings.")
    target_labelled: str = setting(None, "a few labelled target texts (100 or fewer) for `source_then_target` "
                                         "(the source model fine-tuned on them) and `joint` (L = L_source + "
                                         "λ·L_target on both at once); both are reported beside the source-only "
                                         "baseline and beside training on these texts alone "
                                         "(`target_labelled_only`).")
    target_weight: float = setting(4.0, "`joint`'s λ (each labelled target text is repeated round(λ) times among "
                                        "the source texts).")
    target_epochs: int = setting(10, "epochs of `target_labelled_only` (few texts, so more epochs than on the "
                                     "source).")
    strategy: str = setting(TEXT_STRATEGY, "the transfer strategy of every method and its baseline "
                                         "(`\"partial:N\"`, `\"full\"`, `\"lora:R\"`, `\"frozen\"`).")
    pretraining_epochs: int = setting(0, "masked-LM epochs on the target texts before the source fine-tune "
                                         "(domain-adaptive continued pretraining; 0: none). The method then starts "
                                         "from that backbone and is reported as `pretraining+<method>`, beside the "
                                         "source fine-tune from it (`pretraining`) and the source-only baseline. "
                                         "Fine-tuning strategies only.")
    pseudo_label_shares: str = setting("0.6,0.9", "self-training's share of the target texts pseudo-labelled in "
                                                  "each round, comma-separated.")
    sequence_length: int = setting(128, SEQUENCE_LENGTH)
    pooling: str = setting(None, POOLING)
    hidden_dim: int = setting(128, "DANN's domain classifier width (and the frozen-feature adapter's width).")
    alpha: float = setting(10.0, "DANN's λ ramp, 2 / (1 + exp(-α p)) - 1 over training progress p.")
    coral_weight: float = setting(1.0, "the CORAL penalty's weight.")
    domain_weight: float = setting(0.3, "DANN's domain loss weight when fine-tuning (0.3: chosen on the amazon → "
                                        "imdb pool in `benchmarks/transfer_between_domains.py --validate`; the "
                                        "frozen-feature adapter's is 1).")
    text_column: str = setting("text", TEXT_COLUMN)
    label_column: str = setting("label", LABEL_COLUMN)
    training: TrainingConfig = _training(epochs=None, batch_size=None)
    output: OutputConfig = _output("adapted_classifier")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)
        if self.method not in ADAPTATION_METHODS:
            raise ValueError(f"`method` must be one of {ADAPTATION_METHODS}, received {self.method!r}.")
        if (self.method in FEW_LABEL_METHODS) != bool(self.target_labelled):
            raise ValueError(f"`target_labelled` goes with methods {FEW_LABEL_METHODS} and they need it; received "
                             f"method {self.method!r} and target_labelled {self.target_labelled!r}.")
        if not self.target_weight >= 1:
            raise ValueError(f"`target_weight` must be >= 1, received {self.target_weight!r}.")
        if self.pretraining_epochs and (self.strategy == "frozen" or self.method in FEW_LABEL_METHODS):
            raise ValueError(f"`pretraining_epochs` goes with a fine-tuning strategy and a method without target "
                             f"labels; received pretraining_epochs {self.pretraining_epochs!r}, strategy "
                             f"{self.strategy!r} and method {self.method!r}.")
        self.shares = parse_shares(self.pseudo_label_shares)

    def fine_tuning(self):
        """`training` with the fine-tuning defaults (3 epochs, batches of
        16) where unset."""
        return dataclasses.replace(self.training, epochs=self.training.epochs or 3,
                                   batch_size=self.training.batch_size or 16)


def parse_shares(text):
    """`"0.6,0.9"` as `(0.6, 0.9)`, each in (0, 1]; anything else is
    refused, echoing it."""
    try:
        shares = tuple(float(share) for share in str(text).split(","))
    except ValueError:
        shares = ()
    if not shares or not all(0 < share <= 1 for share in shares):
        raise ValueError(f"`pseudo_label_shares` must be comma-separated numbers in (0, 1], such as '0.6,0.9'; "
                         f"received {text!r}.")
    return shares


@documented
@dataclasses.dataclass
class ModelFusionConfig:
    """A model-fusion run; `recipes/model_fusion.py` fills it. Ingredient `i`
    trains with `training`, seeded `seed + i`.

    Example:
    >>> run(ModelFusionConfig(train="reviews.tsv", backbone=minilm_l6_offline_path(), output_dir="runs/fuse"))
    """

    unused_settings: ClassVar[tuple] = PRIVATE_TRAINING

    train: str = setting(help="labelled file; split (stratified) into ingredient training, validation "
                              "(greedy-soup scores) and held-out test rows.")
    backbone: str = setting(help="the KerasHub preset every ingredient starts from.")
    output_dir: str = setting(help="ingredient runs, splits and `metrics.json`.")
    ingredients: int = setting(3, "how many models to fine-tune, with seeds `seed`, `seed + 1`, ...")
    strategy: str = setting(TEXT_STRATEGY, "every ingredient's transfer strategy.")
    sequence_length: int = setting(64, SEQUENCE_LENGTH)
    export: str = setting("greedy", "`\"uniform\"`, `\"greedy\"` or `\"ensemble\"`: what to export when "
                                    "`export_dir` is set.")
    training: TrainingConfig = _training(epochs=2, verbose=0)
    output: OutputConfig = _output("fused_classifier")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)
        if self.export not in FUSIONS:
            raise ValueError(f"`export` must be one of {FUSIONS}, received {self.export!r}.")


@documented
@dataclasses.dataclass
class ContinuedPretrainingConfig:
    """A continued masked-LM pretraining run; every weight trains with AdamW
    at `backbone_learning_rate` (5e-5 unless set).

    Example:
    >>> run(ContinuedPretrainingConfig(texts="yelp.txt", output_preset="presets/minilm_yelp",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/pretrain"))
    """

    unused_settings: ClassVar[tuple] = ("head_learning_rate", "layer_decay", "warmup_epochs", "jit_compile",
                                        "backup_dir", "shuffle", *PRIVATE_TRAINING)

    texts: str = setting(help="unlabelled in-domain texts (`.tsv`/`.txt` first field, `.csv` or `.jsonl` with "
                              "`text_column`).")
    output_preset: str = setting(help="a new folder for the adapted backbone preset.")
    backbone: str = setting(help="the KerasHub preset to start from.")
    output_dir: str = setting("runs/continued_pretraining", "where `metrics.json` (the masked-LM loss) goes.")
    text_column: str = setting("text", TEXT_COLUMN)
    sequence_length: int = setting(128, SEQUENCE_LENGTH)
    mask_rate: float = setting(0.15, "the share of tokens chosen for masking, in (0, 1).")
    training: TrainingConfig = _training(epochs=1, backbone_learning_rate=5e-5)
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)


@documented
@dataclasses.dataclass
class DistillationConfig:
    """A distillation run: a saved text classifier (the teacher) taught to a
    student with fewer blocks, both scored on the same test rows; the
    student trains with AdamW at `head_learning_rate`.

    Example:
    >>> run(DistillationConfig(teacher="presets/reviews", train="reviews.tsv", output_dir="runs/distil"))
    """

    unused_settings: ClassVar[tuple] = STRATEGY_TRAINING + PRIVATE_TRAINING + ("shuffle",)

    teacher: str = setting(help="a folder written by `TextClassifier.save_to_preset` (or `--save-preset`).")
    train: str = setting(help="the labelled texts the student learns from (the teacher's training texts, or "
                              "others).")
    output_dir: str = setting(help="where `metrics.json` goes.")
    test: str = setting(None, "test texts, scored once for teacher and student; `None` holds out a stratified "
                              "`test_fraction` of `train`.")
    test_fraction: float = setting(0.2, "the share of `train` held out for testing.")
    unlabelled: str = setting(None, "more texts (no labels needed) the student learns the teacher's probabilities "
                                    "on, or `None`.")
    text_column: str = setting("text", TEXT_COLUMN)
    label_column: str = setting("label", LABEL_COLUMN)
    num_blocks: int = setting(2, "the student's transformer blocks, taken from the teacher's.")
    temperature: float = setting(2.0, "the softening temperature.")
    hard_weight: float = setting(0.5, "the weight of the labels' cross-entropy.")
    quantize: str = setting(None, "`\"int8\"` or `\"float16\"` to export the student quantized, or `None`.")
    training: TrainingConfig = _training(epochs=16, head_learning_rate=3e-4)
    output: OutputConfig = _output("student")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)
        if self.quantize not in (None, "", "int8", "float16"):
            raise ValueError(f"`quantize` must be 'int8', 'float16' or unset, received {self.quantize!r}.")


@documented
@dataclasses.dataclass
class QuestionAnsweringConfig:
    """Everything an extractive question answering run needs;
    `recipes/question_answering.py` fills it from flags or YAML. Validation
    and test shares are held out whole articles at a time; `batch_size`
    counts windows.

    Example:
    >>> run(QuestionAnsweringConfig(train="data/squad/squad_v1.1_12_articles.json",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/squad"))
    """

    unused_settings: ClassVar[tuple] = PRIVATE_TRAINING

    train: str = setting(help="a SQuAD-format `.json` file (v1.1, or v2.0 with questions that have no answer).")
    backbone: str = setting(help="a KerasHub BERT-family preset (Kaggle handle or local folder).")
    output_dir: str = setting(help="where `metrics.json`, `predictions.json` and the plot go.")
    max_train_questions: int = setting(None, "train on at most this many training questions (the first ones), "
                                             "for a quick run; `None` for all.")
    strategy: str = setting(SPAN_STRATEGY, "`\"full\"`, `\"partial:N\"`, `\"lora:R\"` or `\"frozen\"`.")
    sequence_length: int = setting(256, "token positions a window.")
    doc_stride: int = setting(128, "tokens from one window's start to the next's.")
    max_question_length: int = setting(64, "question tokens kept.")
    max_answer_length: int = setting(30, "the longest answer, in tokens.")
    no_answer_threshold: float = setting(None, "`None` always answers (SQuAD v1.1); a number answers `\"\"` where "
                                               "the no-answer score beats the best span's by more than it (SQuAD "
                                               "v2.0).")
    resume: bool = RESUME
    fresh: bool = FRESH
    splits: SplitsConfig = SPLITS
    training: TrainingConfig = _training(epochs=3, warmup_epochs=0, backbone_learning_rate=1e-4,
                                         layer_decay=0.9)  # Span heads need no warm-up.
    output: OutputConfig = _output("question_answering")
    runtime: RuntimeConfig = RUNTIME

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)


@documented
@dataclasses.dataclass
class TextGenerationConfig:
    """Everything a generation run needs; `tl-keras train-generator` fills
    it from flags or YAML. Prompt → answer pairs train a decoder
    (`TextGenerator`, the loss on the answers); the same decoder prompted
    as it is, before any training, is the baseline beside it. The one
    learning rate is `backbone_learning_rate` (`None`: 5e-4 for LoRA
    weights, 5e-5 otherwise).

    Example:
    >>> run(TextGenerationConfig(train="product_qa.tsv", backbone=smollm2_offline_path(),
    ...     output_dir="runs/product_qa"))
    """

    unused_settings: ClassVar[tuple] = ("head_learning_rate", "layer_decay", "warmup_epochs", "jit_compile",
                                        "backup_dir", "shuffle", *PRIVATE_TRAINING)

    train: str = setting(help="prompt → answer pairs: a `.tsv`/`.txt` of `prompt<TAB>answer` lines, or a `.csv`/"
                              "`.jsonl` with `prompt_column` and `answer_column`.")
    backbone: str = setting(help="a Llama-family decoder preset: a `.gguf` file (converted once), a preset folder, a "
                                 "local Hugging Face Llama folder or a Kaggle handle.")
    output_dir: str = setting(help="where `metrics.json`, `test_answers.jsonl` and the plot go.")
    strategy: str = setting(GENERATOR_STRATEGY, "`\"lora:R\"`, `\"partial:N\"` or `\"full\"` (what trains).")
    prompt_column: str = setting("prompt", "the prompt column of a `.csv`/`.jsonl`.")
    answer_column: str = setting("answer", "the answer column of a `.csv`/`.jsonl`.")
    system_prompt: str = setting(None, "a system turn put before every prompt (training, baseline and export), or "
                                       "`None`.")
    sequence_length: int = setting(512, "the longest prompt + answer in training, in tokens (a longer prompt "
                                        "loses its start, never the answer).")
    max_new_tokens: int = setting(32, "the longest answer generated, in tokens (scoring and the SavedModel).")
    max_train_examples: int = setting(None, "train on at most this many pairs (the first ones), for a quick run; "
                                            "`None` for all.")
    splits: SplitsConfig = SPLITS
    training: TrainingConfig = _training(epochs=2, batch_size=8)
    output: OutputConfig = _output("text_generator")

    def __post_init__(self):
        check_settings(self)
        refuse_unused(self)
        if parse_strategy(self.strategy).kind == "frozen":
            raise ValueError("A frozen decoder is the baseline every run scores already; `strategy` must be "
                             "'lora:R', 'partial:N' or 'full', received 'frozen'.")
