"""The package layout follows the data flow: each layer imports only from
the layers before it, and the command line's help imports no TensorFlow."""

import ast
import pathlib
import subprocess
import sys
import time

import tl_keras

PACKAGE = pathlib.Path(tl_keras.__file__).parent


def _imports(path):
    """The `tl_keras` modules a file imports (at any depth of the file)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tl_keras"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tl_keras"):
                    yield alias.name, node.lineno


def test_every_module_lives_in_a_layer():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == []
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(
        tl_keras.LAYERS)
    for layer in tl_keras.LAYERS:
        modules = sorted(p.stem for p in (PACKAGE / layer).glob("*.py") if p.stem != "__init__")
        assert getattr(__import__(f"tl_keras.{layer}", fromlist=["__all__"]), "__all__") == modules, layer


def test_imports_follow_the_data_flow():
    order = {layer: rank for rank, layer in enumerate(tl_keras.LAYERS)}
    against = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0]
        if layer not in order:
            continue
        for module, line in _imports(path):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in order and order[parts[1]] > order[layer]:
                against.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert against == []


LAYER_NAMES = ("encoder", "head", "span")
TASK_KINDS = ("classification", "multilabel", "regression", "span", "retrieval", "question_answering")


def _reaches_into_layers(tree):
    """`get_layer("encoder"|"head"|...)` calls: a layer contract by name
    instead of `EncoderHeadModel`'s typed `encoder` and `head`."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_layer"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in LAYER_NAMES):
            yield node.lineno


def _switches_on_task_kinds(tree):
    """Comparisons with a task kind's name (`task == "span"`, `kind in
    ("classification", ...)`): the task should bring its own piece."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for constant in ast.walk(node):
                if isinstance(constant, ast.Constant) and constant.value in TASK_KINDS:
                    yield node.lineno


def test_no_layer_contract_by_name_and_no_switch_on_task_kinds_in_training():
    roots = [PACKAGE, PACKAGE.parent / "benchmarks", PACKAGE.parent / "recipes", PACKAGE.parent / "tests"]
    by_name = [f"{path}:{line}" for root in roots for path in sorted(root.rglob("*.py"))
               for line in _reaches_into_layers(ast.parse(path.read_text()))]
    assert by_name == []
    switches = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted((PACKAGE / "training").rglob("*.py"))
                for line in _switches_on_task_kinds(ast.parse(path.read_text()))]
    assert switches == []


def test_the_contract_checks_catch_what_they_forbid():
    tree = ast.parse('head = model.get_layer("head")\nif task == "span":\n    pass\n')
    assert list(_reaches_into_layers(tree)) == [1]
    assert list(_switches_on_task_kinds(tree)) == [2]


def test_the_layering_check_catches_an_import_against_the_flow(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tl_keras.workflows.common import RunResult\n")
    assert list(_imports(bad)) == [("tl_keras.workflows.common", 1)]


def test_help_is_quick_and_imports_no_tensorflow():
    script = ("import sys, contextlib, io\n"
              "from tl_keras.cli.main import main\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n"
              "    try:\n        main(['train-text', '--help'])\n    except SystemExit:\n        pass\n"
              "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    assert time.perf_counter() - started < 5  # A TensorFlow import alone takes longer here.


def test_commands_that_do_not_train_import_no_tensorflow(tmp_path):
    (tmp_path / "exports" / "reviews" / "1").mkdir(parents=True)
    (tmp_path / "exports" / "reviews" / "1" / "saved_model.pb").write_bytes(b"")
    script = ("import sys, contextlib, io\n"
              "from tl_keras.cli.main import main\n"
              "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
              "    codes = [main(['predict', '--rest', '127.0.0.1:1', '--model', 'reviews', 'great phone']),\n"
              f"             main(['serving-config', {str(tmp_path / 'exports')!r}])]\n"
              "print(*codes, 'tensorflow' in sys.modules, 'grpc' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    # A refused connection is a runtime failure (1), not a usage error (2).
    assert result.stdout.split() == ["1", "0", "False", "False"]


def test_bad_settings_are_refused_before_tensorflow_loads():
    script = ("import sys, contextlib, io\n"
              "from tl_keras.cli.main import main\n"
              "err = io.StringIO()\n"
              "with contextlib.redirect_stderr(err):\n"
              "    codes = [main(['train-text', '--train', 'x.csv', '--strategy', 'partial:x']),\n"
              "             main(['train-image', '--strategy', 'lora:2']), main(['distill']),\n"
              "             main(['train-generator', '--train', 'x.tsv', '--strategy', 'frozen']),\n"
              "             main(['train-generator', '--train', 'x.tsv', '--max-new-tokens', '0'])]\n"
              "print(*codes, 'tensorflow' in sys.modules)\n"
              "print(err.getvalue())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["2", "2", "2", "2", "2", "False"]
    assert "`strategy` must be 'lora:R', 'partial:N' or 'full', received 'frozen'" in result.stdout
    assert "`max_new_tokens` must be an integer >= 1, received 0" in result.stdout
    assert "Strategy 'partial:x' needs a whole number after ':'" in result.stdout
    assert "missing required setting(s): --teacher, --train" in result.stdout


def test_a_task_loads_without_tensorflow_start_up_lines():
    script = "import tl_keras\ntl_keras.TextClassifier\nimport tensorflow as tf\nprint(int(tf.constant(1) + 1))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.stdout.split() == ["2"]
    assert result.stderr == ""


def test_tokenising_prints_no_onednn_notice():
    script = ("import tl_keras\ntl_keras.TextClassifier\nimport keras_hub, tensorflow as tf\n"
              "tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=['[PAD]', '[UNK]', 'a', 'b'])\n"
              "packer = keras_hub.layers.StartEndPacker(sequence_length=8, start_value=2, end_value=3)\n"
              "batches = tf.data.Dataset.from_tensor_slices(['a b', 'b']).batch(2).map(lambda s: packer(tokenizer(s)))\n"
              "print([batch.shape[1] for batch in batches])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.stdout.split() == ["[8]"]
    assert "oneDNN" not in result.stderr and "E0000" not in result.stderr, result.stderr


def test_every_workflow_is_a_subcommand_with_complete_help():
    from tl_keras.cli.workflows import COMMANDS

    assert [c.name for c in COMMANDS] == ["train-text", "train-image", "recommend", "adapt", "fuse", "pretrain",
                                          "train-qa", "distill", "train-generator"]
    for workflow in COMMANDS:
        result = subprocess.run([sys.executable, "-m", "tl_keras.cli.main", workflow.name, "--help"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        flags = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  --")]
        assert flags and "--debug" in flags
        for line in result.stdout.split("\n  --")[1:]:
            flag = line.split()[0]
            if flag not in ("config", "debug"):
                assert len(line.split()) > 2, f"{workflow.name} --{flag} has no help"
    text = subprocess.run([sys.executable, "-m", "tl_keras.cli.main", "train-text", "--help"],
                          capture_output=True, text=True).stdout
    assert "{frozen" not in text and "(default: partial:2)" in text and "--no-resume" in text
    assert "{classification,multilabel,regression}" in text


def test_the_wheels_description_is_for_pip_users_and_names_every_command():
    import re
    import tomllib

    root = PACKAGE.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    text = (root / project["readme"]).read_text()
    assert "scripts/" not in text and text.splitlines()[0] == "# tl_keras"
    assert "pip install tl_keras" in text and "recipes/" in text and "export/" in text
    help_text = subprocess.run([sys.executable, "-m", "tl_keras.cli.main", "--help"], capture_output=True,
                               text=True).stdout
    commands = set(re.search(r"\{([a-z\-,]+)\}", help_text).group(1).split(","))
    listed = set(re.findall(r"`([a-z][a-z\-]+)`", text.split("lists every command")[1].split("each takes")[0]))
    assert listed == commands
    for used in re.findall(r"^tl-keras ([a-z\-]+)", text, re.M):
        assert used in commands, used


QUIETED = ("keras", "keras_hub", "tensorflow", "tensorflow_serving", "grpc", "tl_keras")


def imported_before_common(source):
    """Modules a benchmark imports from the heavy libraries before `common`,
    which quiets TensorFlow's start-up lines only if it loads it first."""
    imported = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if "common" in names:
                return imported
            imported += [name for name in names if name.split(".")[0] in QUIETED]
    return []


def test_every_benchmark_imports_common_before_tensorflow():
    benchmarks = sorted((PACKAGE.parent / "benchmarks").glob("*.py"))
    assert benchmarks
    early = {path.name: imported_before_common(path.read_text()) for path in benchmarks}
    assert {name: modules for name, modules in early.items() if modules} == {}
    assert imported_before_common("import keras\nimport common\n") == ["keras"]
