"""The `tl-keras` command: the workflows (`train-text`, `train-image`,
`recommend`, `adapt`, `fuse`, `pretrain`, `train-qa`, `distill`,
`train-generator`), `predict` against TF Serving,
`serve-local`, `batch-predict` and `embed-catalogue` (files scored, and
catalogues embedded, on Apache Beam), `convert-efficientnet-lite` and
`convert-gguf`.

    tl-keras train-text --train reviews.csv --text-column review --label-column stars --export-dir exports
    tl-keras train-generator --train product_qa.tsv --export-dir exports --model-name answers

    tl-keras serve-local exports            # gRPC :8500, REST :8501 (a stand-in, not production)
    tl-keras serving-config exports --output export/models.config
    tl-keras explain --preset presets/reviews "broke in a week"
    tl-keras predict --model reviews "great phone" "broke in a week"
    tl-keras predict --rest localhost:8501 --model reviews --version 2 "great phone"
    tl-keras predict --model products --images shoe.jpg bag.png
    tl-keras predict --model squad --input-names question,context "Who won?" "Denver won Super Bowl 50."
    tl-keras batch-predict --model exports/reviews --input 'new/reviews-*.jsonl.gz' --output scored/reviews
    tl-keras embed-catalogue --model exports/shop_retrieval --input 'catalogue/new-*.csv' --output indexes/new
    tl-keras convert-efficientnet-lite efficientnet-lite0.pth presets/efficientnet_lite0
    tl-keras convert-gguf SmolLM2-135M-Instruct.Q4_1.gguf presets/smollm2_135m
"""

import argparse
import json
import pathlib
import signal
import sys
import threading

import tl_keras  # noqa: F401  (selects the TensorFlow backend first; imports no TensorFlow)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.core.quiet import import_tensorflow_quietly
from tl_keras.cli.workflows import COMMANDS


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows a flag's default only when it has one worth
    showing: not `None` or `False`, and not already said in the help."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive(kind):
    """An argparse type: a number of `kind` > 0, refused with the value."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
        return value

    return parse


def _predict(args):
    from tl_keras.serving.clients import GrpcClient, RestClient

    if not args.rest:
        import_tensorflow_quietly()  # The gRPC client's protos import TensorFlow; REST needs none.

    options = dict(signature=args.signature, version=args.version, version_label=args.version_label,
                   timeout=args.timeout)
    client = RestClient(args.rest, args.model, **options) if args.rest else GrpcClient(args.address, args.model, **options)
    if args.images:
        try:
            values = [pathlib.Path(path).read_bytes() for path in args.texts]
        except OSError as error:
            raise OSError(error.errno, f"cannot read {error.filename}: {error.strerror}") from None
        outputs = client.predict(values, input_name="image_bytes")
        rows = [{"image": path} for path in args.texts]
    else:
        names = [name.strip() for name in args.input_names.split(",")]
        if len(args.texts) % len(names):
            raise ValueError(f"--input-names {args.input_names!r} takes the texts {len(names)} at a time (one "
                             f"for each input), received {len(args.texts)} text(s).")
        values = {name: args.texts[number::len(names)] for number, name in enumerate(names)}
        outputs = client.predict(values)
        rows = [{name: values[name][i] for name in names} for i in range(len(args.texts) // len(names))]
    for i, row in enumerate(rows):
        row.update({name: value[i].tolist() if hasattr(value[i], "tolist") else value[i]
                    for name, value in outputs.items()})
        print(json.dumps(row, default=lambda value: value.decode("utf-8", "replace")))
    return 0


def _serve_local(args):
    from tl_keras.serving.local_server import LocalServer, RequestLimits
    from tl_keras.serving.model_repository import ServedModel, read_model_config

    limits = RequestLimits(max_bytes=args.max_request_bytes, max_tensor_bytes=args.max_tensor_bytes,
                           max_rows=args.max_rows, read_timeout=args.read_timeout,
                           max_string_bytes=args.max_string_bytes, max_text_bytes=args.max_text_bytes,
                           max_image_pixels=args.max_image_pixels,
                           request_timeout=args.request_timeout, compute_workers=args.compute_workers,
                           request_deadline=args.request_deadline)
    base, models = args.exports, None
    if args.model_config_file:
        base, models = None, read_model_config(args.model_config_file)
    elif args.model_name:
        base, models = None, [ServedModel(args.model_name, pathlib.Path(args.model_base_path).resolve())]
    elif base is None:
        raise ValueError("give an export folder, --model_config_file, or --model_name with --model_base_path")
    server = LocalServer(base, grpc_port=args.grpc_port, rest_port=args.rest_port, host=args.host, limits=limits,
                         models=models)
    loaded = server.load_all()  # Warm-up requests replayed before the first real one, as TF Serving does.
    server.start()
    print("loaded " + ", ".join(f"{name} {versions or '(no loadable version)'}" for name, versions in loaded.items()),
          flush=True)
    what = base or ", ".join(f"{m.name} ({m.base_path})" for m in models)
    print(f"serving {what} (local stand-in for TF Serving, not for production): "
          f"gRPC {args.host}:{server.grpc_port}, REST http://{args.host}:{server.rest_port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


def _explain(args):
    import json

    from tl_keras.evaluation.explanations import write_explanations
    from tl_keras.tasks.base import TASK_FILE
    from tl_keras.tasks.image_classifier import ImageClassifier
    from tl_keras.tasks.text_classifier import TextClassifier

    task_file = pathlib.Path(args.preset) / TASK_FILE
    if not task_file.is_file():
        raise ValueError(f"{args.preset} is not a saved classifier (no {TASK_FILE}); save one with --save-preset.")
    kind = json.loads(task_file.read_text()).get("class")
    classes = {"TextClassifier": TextClassifier, "ImageClassifier": ImageClassifier}
    if kind not in classes:
        raise ValueError(f"{args.preset} holds a {kind!r} task; explanations are for TextClassifier and "
                         "ImageClassifier.")
    classifier = classes[kind].from_preset(args.preset)
    explanations = classifier.explain(args.inputs, steps=args.steps)
    for path in write_explanations(explanations, args.output, captions=args.inputs if kind == "TextClassifier"
                                   else [pathlib.Path(p).name for p in args.inputs]):
        print(f"wrote {path}")
    for explanation in explanations:
        top = sorted(zip(explanation.tokens or [], explanation.attributions), key=lambda pair: -abs(pair[1]))[:3]
        print(json.dumps({"label": explanation.label, "probability": round(explanation.probability, 4),
                          "completeness_gap": explanation.completeness_gap,
                          "top_tokens": [[token, round(float(value), 4)] for token, value in top]}))
    return 0


def _serving_config(args):
    from tl_keras.core.files import write_atomically
    from tl_keras.serving.kit import serving_config

    text = serving_config(args.export_dir, args.base)
    if args.output:
        print(f"wrote {write_atomically(args.output, text)}")
    else:
        print(text, end="")
    return 0


def _field_map(text):
    """An argparse type: `input=field,...` to a dict, refused with the value."""
    pairs = [item.split("=") for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not all(part.strip() for part in pair) for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected input=field[,input=field...], received {text!r}")
    return {name.strip(): field.strip() for name, field in pairs}


def _batch_predict(args):
    from tl_keras.pipelines.batch_predict import batch_predict

    result = batch_predict(args.model, args.input, args.output, version=args.version, signature_name=args.signature,
                           fields=args.fields, id_field=args.id_field, batch_size=args.batch_size,
                           reshuffle=args.reshuffle, runner=args.runner, beam_args=args.beam_args)
    print(json.dumps({"rows": result.rows, "predicted": result.predicted, "dead_letters": result.dead_letters,
                      "model_version": result.version, "outputs": f"{result.output}-?????-of-?????.jsonl",
                      "dead_letter_files": f"{result.output}-dead-letters-*.jsonl"}))
    return 0


def _pipeline_flags(parser, signature):
    """The flags `batch-predict` and `embed-catalogue` share."""
    parser.add_argument("--model", required=True, help="the export base folder (its <version>/ folders inside)")
    parser.add_argument("--input", required=True, action="append", help="a glob of input files; repeat for more")
    parser.add_argument("--version", type=_positive(int), help="the export version to run (default: the newest)")
    parser.add_argument("--signature", default=signature, help="the signature to run")
    parser.add_argument("--fields", type=_field_map, help="signature inputs read from fields named otherwise, "
                        "input=field comma-separated (text=review); default: the inputs' own names")
    parser.add_argument("--id-field", default="id", help="the field holding each row's id, kept in the output")
    parser.add_argument("--batch-size", type=_positive(int), default=64, help="rows a model call takes")
    parser.add_argument("--reshuffle", action="store_true",
                        help="spread rows over workers after reading (a few large files on a cluster; on the "
                             "local runner it holds every row in memory between stages)")
    parser.add_argument("--runner", help="a Beam runner (FlinkRunner, SparkRunner, DataflowRunner; default: "
                        "Beam's local Python runner)")
    parser.add_argument("beam_args", nargs="*", help="Beam's own pipeline flags, after `--`")


def _embed_catalogue(args):
    if bool(args.preset) != bool(args.export_dir):
        raise ValueError("--preset and --export-dir go together (the model to export and where), received "
                         f"--preset {args.preset!r} and --export-dir {args.export_dir!r}")
    from tl_keras.pipelines.catalogue_index import embed_catalogue

    result = embed_catalogue(args.model, args.input, args.output, version=args.version,
                             signature_name=args.signature, output_name=args.output_name, fields=args.fields,
                             id_field=args.id_field, batch_size=args.batch_size, reshuffle=args.reshuffle,
                             runner=args.runner, beam_args=args.beam_args)
    summary = {"rows": result.rows, "items": result.predicted, "dead_letters": result.dead_letters,
               "model_version": result.version, "index": result.output}
    if args.preset:
        from tl_keras.export.retrieval import export_recommender
        from tl_keras.tasks.retrieval import Retrieval

        grown = Retrieval.from_preset(args.preset).add_item_index(args.output, int(pathlib.Path(result.output).name))
        name = args.model_name or pathlib.Path(args.model).resolve().name
        summary["export"] = str(export_recommender(grown, args.export_dir, name, k=args.top_k))
    print(json.dumps(summary))
    return 0


def _convert_gguf(args):
    from tl_keras.models.gguf import convert_gguf

    print(f"wrote KerasHub preset {convert_gguf(args.gguf_file, args.output, args.sequence_length)}")


def _convert_efficientnet_lite(args):
    from tl_keras.models.efficientnet_lite import convert_efficientnet_lite

    print(f"wrote KerasHub preset {convert_efficientnet_lite(args.checkpoint, args.output, args.image_size)}")
    return 0


def main(argv=None):
    """Runs a `tl-keras` subcommand; an error ends it with one `error: ...`
    line and exit status 2 for a bad value, 1 for a runtime failure (`--debug` shows the traceback)."""
    return main_with_error_line(_main, argv)


def _main(argv):
    parser = argparse.ArgumentParser(prog="tl-keras", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    for workflow in COMMANDS:
        workflow.add_parser(commands)
    defaults_shown = _DefaultsShown
    predict = commands.add_parser("predict", help="query a TF Serving model with texts or image files",
                                  formatter_class=defaults_shown)
    predict.add_argument("texts", nargs="+", help="texts, or image files with --images")
    predict.add_argument("--images", action="store_true", help="send the files' bytes as `image_bytes`")
    predict.add_argument("--input-names", default="text",
                         help="the signature's string inputs, comma-separated; the texts are dealt to them in "
                              "turn (`text,text_pair` for a pair model, `question,context` for question answering)")
    predict.add_argument("--model", required=True, help="model name on the server")
    predict.add_argument("--address", default="localhost:8500", help="gRPC host:port")
    predict.add_argument("--rest", help="use REST at this host:port instead of gRPC")
    predict.add_argument("--signature", default="serving_default", help="the signature to call")
    predict.add_argument("--version", type=int, help="a model version (default: the newest)")
    predict.add_argument("--version-label", help="a version label such as 'stable'")
    predict.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds a call may take")
    predict.set_defaults(run=_predict, tensorflow=False)
    serve = commands.add_parser("serve-local", help="serve an export folder without Docker (dev stand-in)",
                                formatter_class=defaults_shown)
    serve.add_argument("exports", nargs="?", help="a folder of <name>/<version>/ SavedModels (every sub-folder a "
                       "model, its newest version served)")
    serve.add_argument("--model_config_file", "--model-config-file", help="a TF Serving ModelServerConfig (text "
                       "format): models, base paths, model_version_policy, version_labels")
    serve.add_argument("--model_name", "--model-name", help="one model's name (with --model_base_path)")
    serve.add_argument("--model_base_path", "--model-base-path", help="one model's folder of <version>/ folders")
    serve.add_argument("--port", "--grpc-port", dest="grpc_port", type=int, default=8500,
                       help="gRPC port, TF Serving's --port (0 picks a free one)")
    serve.add_argument("--rest_api_port", "--rest-port", dest="rest_port", type=int, default=8501,
                       help="REST port, TF Serving's --rest_api_port (0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to bind (loopback by default)")
    serve.add_argument("--max-request-bytes", type=_positive(int), default=4 * 1024 * 1024,
                       help="largest REST body or gRPC message")
    serve.add_argument("--max-tensor-bytes", type=_positive(int), default=64 * 1024 * 1024,
                       help="largest size a request's tensors may declare")
    serve.add_argument("--max-rows", type=_positive(int), default=1024, help="most rows an input may have")
    serve.add_argument("--max-string-bytes", type=_positive(int), default=1024 * 1024,
                       help="longest single string value (text, context, encoded image)")
    serve.add_argument("--read-timeout", type=_positive(float), default=10.0,
                       help="seconds a REST read may wait for the client's next bytes")
    serve.add_argument("--max-text-bytes", type=_positive(int), default=256 * 1024,
                       help="most bytes of text one input may hold in all its rows (a bound on its tokens)")
    serve.add_argument("--request-deadline", type=_positive(float), default=30.0,
                       help="seconds a REST client has to send its whole request (headers and body)")
    serve.add_argument("--max-image-pixels", type=_positive(int), default=40_000_000,
                       help="most pixels an encoded image may declare in its header (checked before decoding)")
    serve.add_argument("--request-timeout", type=_positive(float), default=30.0,
                       help="seconds a signature may run for one request (then DEADLINE_EXCEEDED / HTTP 408)")
    serve.add_argument("--compute-workers", type=_positive(int), default=4,
                       help="signatures running at once; with all busy a request is refused at once")
    serve.set_defaults(run=_serve_local)
    explain = commands.add_parser("explain", formatter_class=defaults_shown,
                                  help="why a saved classifier decided: integrated gradients, as HTML and PNG")
    explain.add_argument("inputs", nargs="+", help="texts, or image files for an image classifier")
    explain.add_argument("--preset", required=True, help="a saved classifier (--save-preset, save_to_preset)")
    explain.add_argument("--output", default="runs/explanations", help="the folder for explanations.html and PNGs")
    explain.add_argument("--steps", type=_positive(int), default=64, help="integration steps")
    explain.set_defaults(run=_explain)
    kit = commands.add_parser("serving-config", formatter_class=defaults_shown,
                              help="write TF Serving's models.config for the models an export folder holds")
    kit.add_argument("export_dir", help="the export folder (<name>/<version>/ inside)")
    kit.add_argument("--base", default="/models", help="where TF Serving's container mounts the export folder")
    kit.add_argument("--output", help="the file to write (default: print it)")
    kit.set_defaults(run=_serving_config, tensorflow=False)
    batch = commands.add_parser(
        "batch-predict", formatter_class=defaults_shown,
        help="score files with an exported SavedModel on Apache Beam (pip install tl_keras[beam])",
        description="Scores the rows of files (.jsonl, .csv, .tsv, .tfrecord, .parquet; globs, shards, .gz) with "
                    "an exported SavedModel, as TF Serving loads it, on Apache Beam: one JSON line a row (its id, "
                    "the signature's outputs, the model version) in OUTPUT-SSSSS-of-NNNNN.jsonl; rows that cannot "
                    "be read or scored in OUTPUT-dead-letters-*.jsonl with their file, line and reason. Beam's own "
                    "flags go after `--` (tl-keras batch-predict ... -- --runner=FlinkRunner --flink_master=...).")
    _pipeline_flags(batch, "serving_default")
    batch.add_argument("--output", required=True, help="the output prefix")
    batch.set_defaults(run=_batch_predict)
    embed = commands.add_parser(
        "embed-catalogue", formatter_class=defaults_shown,
        help="embed item rows with an export's embed_items into a new item index version, on Apache Beam",
        description="Embeds item rows (an id and a text a row; the formats of batch-predict) with a retrieval "
                    "export's `embed_items` signature into OUTPUT/<next version>/ (TFRecord shards of ids and "
                    "vectors, index.json, dead letters), written whole or not at all. With --preset and "
                    "--export-dir it also writes the retrieval export's next version, serving the catalogue and "
                    "the new items.")
    _pipeline_flags(embed, "embed_items")
    embed.add_argument("--output", required=True, help="the item index's base folder")
    embed.add_argument("--output-name", default="embeddings", help="the signature's output holding the vectors")
    embed.add_argument("--preset", help="the retrieval model's preset (--save-preset of `recommend`), to export "
                       "with the index")
    embed.add_argument("--export-dir", help="where to write the retrieval export's next version (with --preset)")
    embed.add_argument("--model-name", help="the export's model name (default: --model's folder name)")
    embed.add_argument("--top-k", type=_positive(int), default=10, help="items the new export returns")
    embed.set_defaults(run=_embed_catalogue)
    convert = commands.add_parser("convert-efficientnet-lite", formatter_class=defaults_shown,
                                  help="EfficientNet-PyTorch Lite0-Lite4 .pth to a KerasHub preset folder, without torch")
    convert.add_argument("checkpoint", help="the .pth file")
    convert.add_argument("output", help="the preset folder to create")
    convert.add_argument("--image-size", type=int,
                         help="the image converter's square size (default: the variant's native resolution, "
                              "224 for Lite0 to 300 for Lite4)")
    convert.set_defaults(run=_convert_efficientnet_lite)
    gguf = commands.add_parser("convert-gguf", formatter_class=defaults_shown,
                               help="a Llama-architecture .gguf decoder to a KerasHub preset folder "
                                    "(--backbone also takes the .gguf file itself)")
    gguf.add_argument("gguf_file", help="the .gguf file (F32, F16, Q4_0, Q4_1 or Q8_0 tensors)")
    gguf.add_argument("output", help="the preset folder to create")
    gguf.add_argument("--sequence-length", type=_positive(int), default=512,
                      help="the causal-LM preprocessor's packed length")
    gguf.set_defaults(run=_convert_gguf)
    args = parser.parse_args(argv)
    if getattr(args, "tensorflow", True):
        import_tensorflow_quietly()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
