"""Generative answers to SQuAD questions: SmolLM2-135M-Instruct (its
offline GGUF file) prompted zero-shot, and fine-tuned with LoRA on
prompt → answer pairs of the training articles (`TextGenerator`: the loss
on the answer tokens only), scored by exact match and F1 beside the
extractive MiniLM-L6 reader on the same test questions.

The split is the question answering recipe's (by article, seed 1234: 8
training articles, 2 validation, 2 test: 2008_Sichuan_earthquake and
Super_Bowl_50). Generation costs seconds a question on two CPU cores, so a
seeded sample of the test questions is scored (`--test-questions`), the
same for every row; `--reader-predictions` takes the `test_predictions.json`
the question answering recipe writes (all test questions) and scores the
reader on that sample. Every setting below was fixed before the runs;
nothing is chosen on the test questions.

    .venv/bin/python recipes/question_answering.py --train data/squad/squad_v1.1_12_articles.json \\
        --validation-fraction 0.08 --test-fraction 0.17 --output-dir runs/squad_reader
    .venv/bin/python benchmarks/generative_qa.py --reader-predictions runs/squad_reader/test_predictions.json
"""

import argparse
import json
import time

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.offline import smollm2_offline_path
from tl_keras.data.squad import read_squad, split_by_article
from tl_keras.evaluation.squad import squad_scores
from tl_keras.models.gguf import gguf_preset
from tl_keras.tasks.text_generator import TextGenerator

SQUAD = "data/squad/squad_v1.1_12_articles.json"
INSTRUCTION = "Answer the question with a short span copied from the passage. Reply with the span only."


def prompt(question):
    return f"{INSTRUCTION}\n\nPassage: {question.context}\n\nQuestion: {question.question}"


def sample(questions, count, seed):
    rng = np.random.default_rng(seed)
    return [questions[i] for i in np.sort(rng.permutation(len(questions))[:count])]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=SQUAD)
    parser.add_argument("--test-questions", type=int, default=160)
    parser.add_argument("--train-questions", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--sequence-length", type=int, default=384, help="prompt + answer tokens in training")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--reader-predictions", help="test_predictions.json of the question answering recipe")
    parser.add_argument("--cache", default="runs/generative_qa", help="where the GGUF file is converted")
    parser.add_argument("--save-preset", help="save the fine-tuned generator here (for the serving benchmark)")
    parser.add_argument("--sampled", action="store_true", help="also score top-k sampled answers")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--only", nargs="*", help="run only rows whose name contains one of these")
    args = parser.parse_args()

    train, _, test = split_by_article(read_squad(args.data), (0.75, 0.08, 0.17), args.seed)
    test, train = sample(test, args.test_questions, args.seed), sample(train, args.train_questions, args.seed)
    print(f"test articles {sorted({q.title for q in test})}: {len(test)} questions sampled; "
          f"{len(train)} training questions", flush=True)
    preset = gguf_preset(smollm2_offline_path(), args.cache)
    rows = []

    def score(name, answers, seconds):
        rows.append((name, squad_scores(dict(zip([q.id for q in test], answers)), test), seconds))
        print(rows[-1], flush=True)
        for question, answer in list(zip(test, answers))[:5]:
            print(f"   {question.question!r} -> {answer!r} (gold {question.answer_texts[0]!r})", flush=True)

    def wanted(name):
        return not args.only or any(part in name for part in args.only)

    if args.reader_predictions and wanted("reader"):
        predictions = json.loads(open(args.reader_predictions, encoding="utf-8").read())
        score("MiniLM-L6 extractive reader (the QA recipe's defaults, all training articles)",
              [predictions[q.id] for q in test], float("nan"))
    prompts = [prompt(q) for q in test]
    if wanted("zero-shot"):
        started = time.perf_counter()
        generator = TextGenerator.from_preset(preset)
        score("SmolLM2-135M-Instruct, zero-shot prompt, greedy",
              generator.generate(prompts, max_new_tokens=args.max_new_tokens, verbose=1),
              time.perf_counter() - started)
    if wanted("lora"):
        started = time.perf_counter()
        generator = TextGenerator.from_preset(preset, strategy=f"lora:{args.rank}",
                                              sequence_length=args.sequence_length)
        generator.fit([prompt(q) for q in train], [q.answer_texts[0] for q in train], batch_size=8,
                      epochs=args.epochs, seed=args.seed)
        trained = time.perf_counter() - started
        name = f"SmolLM2-135M lora:{args.rank}, {len(train)} questions x {args.epochs} epochs"
        score(f"{name}, greedy", generator.generate(prompts, max_new_tokens=args.max_new_tokens, verbose=1),
              time.perf_counter() - started)
        started = time.perf_counter()
        if args.sampled:
            score(f"{name}, top-k sampling (k 10, seed 1)",
                  generator.generate(prompts, max_new_tokens=args.max_new_tokens, sampler="top_k", seed=1),
                  time.perf_counter() - started + trained)
        if args.save_preset:
            generator.save_to_preset(args.save_preset)

    print(f"\nSQuAD v1.1 (bundled 12 articles), {len(test)} test questions sampled (seed {args.seed}) from the 2 "
          f"test articles; answers of at most {args.max_new_tokens} new tokens\n")
    print("| method | test EM | test F1 | seconds (training + answering) |\n| --- | --- | --- | --- |")
    for name, scores, seconds in rows:
        print(f"| {name} | {scores['exact_match']:.1f} | {scores['f1']:.1f} | "
              f"{'-' if np.isnan(seconds) else f'{seconds:.0f}'} |")


if __name__ == "__main__":
    main()
