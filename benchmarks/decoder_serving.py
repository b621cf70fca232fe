"""Single-request latency of the two decoder exports, served by the local
gRPC server as TF Serving serves them (loopback; p50 and p99 over
`--repeats` requests after warm-up):

- the decoder text classifier: SmolLM2-135M (its offline GGUF file),
  frozen, last-token pooling, its head trained on the bundled amazon
  review sentences; one review a request;
- the text generator: prompt in, greedy answer out with the KV cache, at
  most `--max-new-tokens` tokens (`--generator-preset`: a fine-tuned
  `TextGenerator` preset, as `generative_qa.py --save-preset` writes; the
  instruct model as it is otherwise); one bundled SQuAD question with its
  passage a request.

    .venv/bin/python benchmarks/decoder_serving.py --generator-preset runs/smollm2_squad
"""

import argparse
import tempfile
import time

import numpy as np

import common
from tl_keras.core.offline import smollm2_offline_path
from tl_keras.data.squad import read_squad, split_by_article
from tl_keras.models.gguf import gguf_preset
from tl_keras.serving.clients import GrpcClient
from tl_keras.serving.local_server import LocalServer
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.tasks.text_generator import TextGenerator

from generative_qa import SQUAD, prompt


def latencies(function, inputs, repeats):
    for value in inputs[:2]:
        function(value)  # Warm-up beyond the export's own warm-up request.
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        function(inputs[i % len(inputs)])
        times.append(time.perf_counter() - started)
    return 1000 * np.percentile(times, 50), 1000 * np.percentile(times, 99)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator-preset", help="a TextGenerator preset; the instruct model if not given")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cache", default="runs/decoder_serving", help="where the GGUF file is converted")
    args = parser.parse_args()
    smollm2 = gguf_preset(smollm2_offline_path(), args.cache)
    train, validation, vocab, _, _ = common.reviews()
    classifier = TextClassifier.from_preset(smollm2, labels=sorted(set(train.labels)), strategy="frozen",
                                            sequence_length=48)
    classifier.fit(train.texts, train.labels, epochs=10, verbose=0)
    generator = TextGenerator.from_preset(args.generator_preset or smollm2)
    questions = split_by_article(read_squad(SQUAD), (0.75, 0.08, 0.17), 1234)[2][:40]
    with tempfile.TemporaryDirectory() as folder:
        classifier.export(folder, "reviews", warmup=validation.texts[:2])
        generator.export(folder, "answers", warmup=[prompt(questions[0])], max_new_tokens=args.max_new_tokens)
        with LocalServer(folder, grpc_port=0, rest_port=None) as server:
            address = f"127.0.0.1:{server.grpc_port}"
            reviews, answers = GrpcClient(address, "reviews", timeout=60), GrpcClient(address, "answers", timeout=300)
            rows = [("SmolLM2-135M text classifier (frozen, last token), one review",
                     latencies(lambda text: reviews.predict([text]), validation.texts, args.repeats)),
                    (f"SmolLM2-135M generator ({'fine-tuned' if args.generator_preset else 'instruct'}), one "
                     f"question + passage, <= {args.max_new_tokens} new tokens",
                     latencies(lambda q: answers.predict([prompt(q)], input_name="prompt"), questions,
                               args.repeats))]
            tokens = [int(answers.predict([prompt(q)], input_name="prompt")["num_tokens"][0]) for q in questions[:10]]
    print(f"\ngRPC on loopback, local server, {args.repeats} single requests each after warm-up\n")
    print("| export | p50 ms | p99 ms |\n| --- | --- | --- |")
    for name, (p50, p99) in rows:
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")
    print(f"\ngenerated tokens a request (first 10 questions): mean {np.mean(tokens):.1f}, max {max(tokens)}")


if __name__ == "__main__":
    main()
