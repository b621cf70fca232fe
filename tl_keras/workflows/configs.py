"""The settings of every workflow, one dataclass a job, with no TensorFlow
import: the command line builds its flags and help from these fields and
their `Args:` docstrings."""

import dataclasses

from tl_keras.core.choices import ADAPTATION_METHODS, FEW_LABEL_METHODS, FUSIONS
from tl_keras.core.ranges import check_settings
from tl_keras.training.config import TrainingConfig


@dataclasses.dataclass
class TextClassificationConfig:
    """Everything a text transfer run needs; `recipes/text_classification.py`
    fills it from flags or YAML.

    Args:
        train: training file (`.tsv`/`.txt`, `.csv`, `.jsonl`).
        backbone: a KerasHub preset (Kaggle handle or local folder).
        output_dir: where `metrics.json` and the plots go.
        validation: validation file (scored each epoch; the split to choose
            settings on); `None` holds out a stratified `validation_fraction`
            of `train`.
        test: test file, scored once at the end and reported apart; `None`
            holds out a stratified `test_fraction` of `train` first.
        validation_fraction: the share of `train` (after the test share)
            held out for validation.
        test_fraction: the share of `train` held out for testing.
        strategy: `"frozen"`, `"partial:N"`, `"full"` or `"lora:R"`.
        task: `"classification"`, `"multilabel"` or `"regression"`.
        pooling: `"mean"`, `"cls"`, `"pooled"`, or `None` for the backbone's
            default.
        text_column, label_column: the columns of a `.csv`/`.jsonl`.
        pair_column: the column of each row's second text, for text-pair
            tasks (query and title, question and answer, two listings);
            a `.tsv` then holds `text<TAB>text_pair<TAB>label`. The pair is
            packed as one sequence (`[CLS] text [SEP] text_pair [SEP]`) and
            the SavedModel takes `text` and `text_pair`. `None` for one text.
        export_dir, model_name: write a TF Serving SavedModel to
            `export_dir/model_name/<version>/` when `export_dir` is set.
        save_preset: a new folder to save the trained classifier in as a
            preset (`from_preset` and `--backbone` load it), or `None`.
        distribute: `"auto"`, `"none"`, `"mirrored"` or `"multi_worker"`
            (see `tl_keras.training.distribution.pick_distribution`).
        precision: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`
            (GPU only; float32 on a CPU).
        resume: keep per-epoch backups in `output_dir/backup` so a killed run
            started again resumes where it stopped; a restart with other
            data or settings stops, naming what changed.
        fresh: discard backups of an earlier run with other settings and
            start again.
        training: the `TrainingConfig`; its `batch_size` is per replica.

    Example:
    >>> run(TextClassificationConfig(train="reviews.tsv", backbone=
    ...     minilm_l6_offline_path(), output_dir="runs/reviews"))
    """

    train: str
    backbone: str
    output_dir: str
    validation: str = None
    test: str = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    strategy: str = "frozen"
    task: str = "classification"
    text_column: str = "text"
    label_column: str = "label"
    pair_column: str = None
    sequence_length: int = 128
    pooling: str = None
    hidden_dim: int = 0
    dropout: float = 0.1
    export_dir: str = None
    model_name: str = "text_classifier"
    save_preset: str = None
    distribute: str = "auto"
    precision: str = "float32"
    resume: bool = True
    fresh: bool = False
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class ImageClassificationConfig:
    """Everything an image transfer run needs; `recipes/image_classification.py`
    fills it from flags or YAML.

    Args:
        train: a folder with one sub-folder of images per class, a
            `path,label` CSV, or an image list (`path, fine_id, coarse_id`
            lines, the Grocery Store dataset's `train.txt`) with its
            `classes.csv` catalogue beside it: then coarse accuracy and the
            fallback to coarse classes are reported too.
        backbone: a KerasHub image preset (Kaggle handle, local preset
            folder, local timm folder, or one made by
            `tl-keras convert-efficientnet-lite`).
        output_dir: where `metrics.json` and the plots go.
        validation: validation images (scored each epoch); `None` holds out
            a stratified `validation_fraction` of `train`.
        test: test images, scored once at the end and reported apart;
            `None` holds out a stratified `test_fraction` of `train` first.
        validation_fraction, test_fraction: the shares held out of `train`.
        strategy: `"frozen"`, `"partial:N"` (top N stages) or `"full"`.
        image_size: images are resized to `image_size` x `image_size`.
        augmentation: comma-separated `flip`, `rotation`, `zoom`,
            `contrast`, `crop` (random resized crops), `color` (colour
            jitter), `randaugment`, or `none`; training batches only. The
            frozen strategy's feature cache is used only without it.
        test_time_augmentation: `flip` averages each image's features with
            its mirror image's at inference (validation, test, the
            SavedModel; twice the backbone's cost), or `none`.
        skip_bad_images: leave out unreadable or non-RGB images and report
            how many, instead of stopping at the first.
        export_dir, model_name: write a TF Serving SavedModel to
            `export_dir/model_name/<version>/` when `export_dir` is set.
        save_preset: a new folder to save the trained classifier in as a
            preset, or `None`.
        distribute, precision, resume, fresh, training: as for text
            (`TextClassificationConfig`).

    Example:
    >>> run(ImageClassificationConfig(train="photos", backbone="presets/efficientnet_lite0",
    ...     output_dir="runs/photos"))
    """

    train: str
    backbone: str
    output_dir: str
    validation: str = None
    test: str = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    strategy: str = "frozen"
    image_size: int = 224
    augmentation: str = "flip,rotation,zoom,contrast"
    test_time_augmentation: str = "none"
    skip_bad_images: bool = False
    hidden_dim: int = 0
    dropout: float = 0.1
    export_dir: str = None
    model_name: str = "image_classifier"
    save_preset: str = None
    distribute: str = "auto"
    precision: str = "float32"
    resume: bool = True
    fresh: bool = False
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def __post_init__(self):
        check_settings(self)
        if str(self.strategy).startswith("lora"):
            raise ValueError(f"Strategy {self.strategy!r} needs a transformer backbone; use frozen, partial:N or "
                             "full.")


@dataclasses.dataclass
class RecommendationConfig:
    """Everything a recommendation run needs; `recipes/recommendation.py`
    fills it from flags or YAML.

    Args:
        interactions: `user_id,item_id[,timestamp][,rating]` CSV.
        items: `item_id,text` CSV.
        backbone: a KerasHub text preset for the item tower.
        output_dir: where `metrics.json`, the table and the plot go.
        users: optional `user_id,<feature>,...` CSV.
        movielens: a local MovieLens-100k `ml-100k/` folder, converted to
            the three files under `output_dir` (command line only; the data
            may not be redistributed, so it never ships).
        holdout: each user's most recent interactions held out for testing
            (and each user's last training interaction is the validation
            slice on which epochs and EASE's λ are chosen).
        history_length: recent items the user tower reads.
        history_pooling: `"recency"` (a learned weight per position) or
            `"mean"` over the recent items.
        embedding_dim: the towers' output size.
        text_hidden_dim: the hidden ReLU width of the item text projection
            (0: linear).
        item_id_embedding: add a learned id vector to the text tower (items
            unseen in training fall back to text alone).
        id_dropout: the share of items whose id vector is left out in each
            training step, so text alone learns to place an item (and new
            items rank beside known ones).
        user_id_embedding: learn a vector per user id.
        temperature: the initial softmax temperature (learned).
        remove_accidental_hits: mask duplicates of a positive among its
            in-batch negatives.
        logq_correction: subtract log sampling probability from the logits.
        sampled_negatives: uniformly sampled negatives a step, beside the
            in-batch ones.
        epochs: the most epochs; the number is chosen on validation.
        patience: epochs without a validation gain before stopping.
        cold_start_items: the share of items moved wholly to the test side
            for the item-cold-start report (0 with `cold_start_users` 0
            skips the cold-start split).
        cold_start_users: the share of users left with `cold_start_keep`
            training interactions for the user-cold-start report.
        ks: the cut-offs for recall and NDCG, comma-separated.
        export_dir, model_name, top_k: export the text model's retrieval
            SavedModel returning `top_k` items when `export_dir` is set.
        distribute: `"auto"`, `"none"`, `"mirrored"` or `"multi_worker"`.

    Example:
    >>> run(RecommendationConfig(interactions="clicks.csv", items="items.csv",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/shop"))
    """

    interactions: str
    items: str
    backbone: str
    output_dir: str
    users: str = None
    movielens: str = None
    holdout: int = 2
    history_length: int = 20
    history_pooling: str = "recency"
    sequence_length: int = 32
    pooling: str = None
    embedding_dim: int = 64
    text_hidden_dim: int = 256
    item_id_embedding: bool = True
    id_dropout: float = 0.0
    user_id_embedding: bool = True
    temperature: float = 0.1
    remove_accidental_hits: bool = True
    logq_correction: bool = True
    sampled_negatives: int = 0
    epochs: int = 10
    patience: int = 2
    batch_size: int = 256
    learning_rate: float = 3e-3
    cold_start_items: float = 0.15
    cold_start_users: float = 0.1
    cold_start_keep: int = 2
    ks: str = "10,50"
    seed: int = 1234
    verbose: int = 1
    export_dir: str = None
    model_name: str = "retrieval"
    top_k: int = 10
    distribute: str = "auto"

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class DomainAdaptationConfig:
    """A domain-adaptation run; `recipes/domain_adaptation.py` fills it.

    Args:
        source: labelled source-domain file.
        target: target-domain file; only its texts are used for training.
        backbone: a KerasHub preset.
        output_dir: where `metrics.json` (every method beside the
            source-only baseline) goes.
        target_validation: labelled target file for the target metrics
            (`None`: no target metrics). When it is the `target` file
            itself, `target_test_fraction` of its rows (stratified) are the
            test and are left out of the unlabelled texts.
        target_test_fraction: see `target_validation`.
        method: `"self_training"` (fine-tunes with `strategy`, then trains
            on its own confident predictions on the target texts; measured
            best in `benchmarks/transfer_between_domains.py`), `"dann"` or
            `"coral"` (fine-tuned with `strategy` on the source and target
            texts at once; with `"frozen"`, an adapter over cached
            features), `"source_then_target"` or `"joint"` (with
            `target_labelled`), or `"source_only"` (the baseline alone).
            The source-only baseline always runs with the same strategy and
            settings.
        target_labelled: a few labelled target texts (100 or fewer) for
            `source_then_target` (the source model fine-tuned on them) and
            `joint` (L = L_source + λ·L_target on both at once); both are
            reported beside the source-only baseline and beside training on
            these texts alone (`target_labelled_only`).
        target_weight: `joint`'s λ (each labelled target text is repeated
            round(λ) times among the source texts).
        target_epochs: epochs of `target_labelled_only` (few texts, so
            more epochs than on the source).
        strategy: the transfer strategy of every method and its baseline
            (`"partial:N"`, `"full"`, `"lora:R"`, `"frozen"`; default
            `partial:2`).
        pseudo_label_shares: self-training's share of the target texts
            pseudo-labelled in each round, comma-separated.
        epochs: fine-tuning epochs on the source (default 3), or the
            adapter's epochs for DANN/CORAL (default 10).
        batch_size: default 16 for fine-tuning, 32 for the adapter.
        learning_rate: the frozen-feature adapter's learning rate.
        hidden_dim, alpha: DANN's domain classifier width and λ ramp (and
            the frozen-feature adapter's width).
        coral_weight: the CORAL penalty's weight.
        domain_weight: DANN's domain loss weight when fine-tuning (0.3:
            chosen on the amazon → imdb pool in
            `benchmarks/transfer_between_domains.py --validate`; the
            frozen-feature adapter's is 1).
        export_dir, model_name: export the adapted text model.
    """

    source: str
    target: str
    backbone: str
    output_dir: str
    target_validation: str = None
    target_test_fraction: float = 0.25
    method: str = "self_training"
    target_labelled: str = None
    target_weight: float = 4.0
    target_epochs: int = 10
    strategy: str = None
    pseudo_label_shares: str = "0.6,0.9"
    sequence_length: int = 128
    pooling: str = None
    epochs: int = None
    batch_size: int = None
    learning_rate: float = 1e-3
    hidden_dim: int = 128
    alpha: float = 10.0
    coral_weight: float = 1.0
    domain_weight: float = 0.3
    seed: int = 1234
    text_column: str = "text"
    label_column: str = "label"
    export_dir: str = None
    model_name: str = "adapted_classifier"
    verbose: int = 1

    def __post_init__(self):
        check_settings(self)
        if self.method not in ADAPTATION_METHODS:
            raise ValueError(f"`method` must be one of {ADAPTATION_METHODS}, received {self.method!r}.")
        if (self.method in FEW_LABEL_METHODS) != bool(self.target_labelled):
            raise ValueError(f"`target_labelled` goes with methods {FEW_LABEL_METHODS} and they need it; received "
                             f"method {self.method!r} and target_labelled {self.target_labelled!r}.")
        if not self.target_weight >= 1:
            raise ValueError(f"`target_weight` must be >= 1, received {self.target_weight!r}.")
        self.strategy = self.strategy or "partial:2"
        self.shares = parse_shares(self.pseudo_label_shares)


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


@dataclasses.dataclass
class ModelFusionConfig:
    """A model-fusion run; `recipes/model_fusion.py` fills it.

    Args:
        train: labelled file; split (stratified) into ingredient training,
            validation (greedy-soup scores) and held-out test rows.
        backbone: the KerasHub preset every ingredient starts from.
        output_dir: ingredient runs, splits and `metrics.json`.
        ingredients: how many models to fine-tune, with seeds `seed`,
            `seed + 1`, ...
        export: `"uniform"`, `"greedy"` or `"ensemble"`: what to export when
            `export_dir` is set.
    """

    train: str
    backbone: str
    output_dir: str
    ingredients: int = 3
    strategy: str = "partial:2"
    sequence_length: int = 64
    epochs: int = 2
    batch_size: int = 16
    seed: int = 1234
    distribute: str = "auto"
    export: str = "greedy"
    export_dir: str = None
    model_name: str = "fused_classifier"
    verbose: int = 0

    def __post_init__(self):
        check_settings(self)
        if self.export not in FUSIONS:
            raise ValueError(f"`export` must be one of {FUSIONS}, received {self.export!r}.")


@dataclasses.dataclass
class ContinuedPretrainingConfig:
    """A continued masked-LM pretraining run.

    Args:
        texts: unlabelled in-domain texts (`.tsv`/`.txt` first field,
            `.csv` or `.jsonl` with `text_column`).
        output_preset: a new folder for the adapted backbone preset.
        backbone: the KerasHub preset to start from.
        output_dir: where `metrics.json` (the masked-LM loss) goes.
        text_column: the text column of a `.csv`/`.jsonl`.
        sequence_length: token positions a text.
        epochs: passes over the texts, a new mask each.
        batch_size: texts a replica takes a step.
        learning_rate: AdamW's learning rate.
        mask_rate: the share of tokens chosen for masking, in (0, 1).
        seed: seeds weights, masks and shuffling.
        distribute: `"auto"`, `"none"`, `"mirrored"` or `"multi_worker"`.
        verbose: progress bars (1) or none (0).

    Example:
    >>> run(ContinuedPretrainingConfig(texts="yelp.txt", output_preset="presets/minilm_yelp",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/pretrain"))
    """

    texts: str
    output_preset: str
    backbone: str
    output_dir: str = "runs/continued_pretraining"
    text_column: str = "text"
    sequence_length: int = 128
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 5e-5
    mask_rate: float = 0.15
    seed: int = 1234
    distribute: str = "auto"
    verbose: int = 1

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class DistillationConfig:
    """A distillation run: a saved text classifier (the teacher) taught to a
    student with fewer blocks, both scored on the same test rows.

    Args:
        teacher: a folder written by `TextClassifier.save_to_preset` (or
            `--save-preset`).
        train: the labelled texts the student learns from (the teacher's
            training texts, or others).
        output_dir: where `metrics.json` goes.
        test: test texts, scored once for teacher and student; `None`
            holds out a stratified `test_fraction` of `train`.
        test_fraction: the share of `train` held out for testing.
        unlabelled: more texts (no labels needed) the student learns the
            teacher's probabilities on, or `None`.
        text_column, label_column: the columns of a `.csv`/`.jsonl`.
        num_blocks: the student's transformer blocks, taken from the
            teacher's.
        temperature: the softening temperature.
        hard_weight: the weight of the labels' cross-entropy.
        epochs, batch_size, learning_rate: the student's training.
        quantize: `"int8"` or `"float16"` to export the student quantized, or
            `None`.
        export_dir, model_name: export the student when `export_dir` is set.
        save_preset: a new folder to save the student in, or `None`.
        seed: seeds the student's training.
        verbose: progress bars (1) or none (0).
    """

    teacher: str
    train: str
    output_dir: str
    test: str = None
    test_fraction: float = 0.2
    unlabelled: str = None
    text_column: str = "text"
    label_column: str = "label"
    num_blocks: int = 2
    temperature: float = 2.0
    hard_weight: float = 0.5
    epochs: int = 16
    batch_size: int = 16
    learning_rate: float = 3e-4
    quantize: str = None
    export_dir: str = None
    model_name: str = "student"
    save_preset: str = None
    seed: int = 1234
    verbose: int = 1

    def __post_init__(self):
        check_settings(self)
        if self.quantize not in (None, "", "int8", "float16"):
            raise ValueError(f"`quantize` must be 'int8', 'float16' or unset, received {self.quantize!r}.")


@dataclasses.dataclass
class QuestionAnsweringConfig:
    """Everything an extractive question answering run needs;
    `recipes/question_answering.py` fills it from flags or YAML.

    Args:
        train: a SQuAD-format `.json` file (v1.1, or v2.0 with questions
            that have no answer).
        backbone: a KerasHub BERT-family preset (Kaggle handle or local
            folder).
        output_dir: where `metrics.json`, `predictions.json` and the plot go.
        validation: a SQuAD file scored each epoch (the best epoch is kept);
            `None` holds out `validation_fraction` of `train`'s questions,
            whole articles at a time.
        test: a SQuAD file scored once at the end; `None` holds out
            `test_fraction` of `train` first, whole articles at a time.
        validation_fraction, test_fraction: shares of `train`'s questions.
        max_train_questions: train on at most this many training questions
            (the first ones), for a quick run; `None` for all.
        strategy: `"full"`, `"partial:N"`, `"lora:R"` or `"frozen"`.
        sequence_length: token positions a window.
        doc_stride: tokens from one window's start to the next's.
        max_question_length: question tokens kept.
        max_answer_length: the longest answer, in tokens.
        no_answer_threshold: `None` always answers (SQuAD v1.1); a number
            answers `""` where the no-answer score beats the best span's by
            more than it (SQuAD v2.0).
        export_dir, model_name: write a TF Serving SavedModel to
            `export_dir/model_name/<version>/` when `export_dir` is set.
        save_preset: a new folder to save the trained reader in, or `None`.
        distribute, precision, resume, fresh: as for text
            (`TextClassificationConfig`).
        training: the `TrainingConfig`; its `batch_size` (windows) is per
            replica.

    Example:
    >>> run(QuestionAnsweringConfig(train="data/squad/squad_v1.1_12_articles.json",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/squad"))
    """

    train: str
    backbone: str
    output_dir: str
    validation: str = None
    test: str = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    max_train_questions: int = None
    strategy: str = "full"
    sequence_length: int = 256
    doc_stride: int = 128
    max_question_length: int = 64
    max_answer_length: int = 30
    no_answer_threshold: float = None
    export_dir: str = None
    model_name: str = "question_answering"
    save_preset: str = None
    distribute: str = "auto"
    precision: str = "float32"
    resume: bool = True
    fresh: bool = False
    training: TrainingConfig = dataclasses.field(default_factory=lambda: TrainingConfig(
        epochs=3, warmup_epochs=0, backbone_learning_rate=1e-4, layer_decay=0.9))  # Span heads need no warm-up.

    def __post_init__(self):
        check_settings(self)
