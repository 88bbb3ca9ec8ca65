"""glmd-quickstart: the whole stage-1 GLMD story on a CPU in minutes, with no downloads.

    glmd-quickstart [--architecture glm|decoder] [--workdir quickstart_out] [--teacher-iters 300]
                    [--student-iters 200] [--compress-vocab 0.5]

1. collects a real-English corpus from the Python interpreter's bundled documentation,
2. trains a tokenizer and preprocesses train / held-out splits: GLM, a SentencePiece model with
   GLM's special tokens; a decoder (``--architecture decoder``), a byte-level BPE ``tokenizer.json``
   trained with Hugging Face ``tokenizers`` (:func:`~megatron_glmd.data.hf_tokenizer.train_byte_level_bpe`),
3. pre-trains a small teacher on hard labels: a GLM on blank infilling, or a Llama-style decoder
   (GQA, SwiGLU, RMSNorm, rotary positions, untied head) on next-token prediction of packed documents,
4. distils a smaller student of the same family from it with GLMD (L'_sp, τ = 15, every non-pad
   token), and a second one at τ = 1 for comparison (--compare-temperature),
5. trains the same student from scratch on hard labels for the same number of steps (baseline),
6. prints held-out loss of teacher, GLMD students and baseline, and the student–teacher KL of the
   students: one table for both families (the loss is blank infilling's or the next token's);
7. with --compress-vocab R (:mod:`.quickstart_compress`): counts token frequencies, slices the
   teacher's embeddings at r_v = R, distils a student of the K kept tokens for the same steps and
   prints it next to the full-vocabulary GLMD student, both over the kept tokens.
Each phase is an ordinary run of the training engine; its configuration is written next to its
checkpoints under the work directory.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..config import ConfigError
from ..data.errors import DataError
from ..data.hf_tokenizer import BYTE_ALPHABET
from .quickstart_compress import print_comparison


ARCHITECTURES = ("glm", "decoder")
TOKENIZER_TYPE = {"glm": "sentencepiece", "decoder": "hf"}
OBJECTIVE = {"glm": "blank infilling", "decoder": "next-token prediction"}
LOSS_NAME = {"glm": "blank-infilling loss", "decoder": "next-token loss"}


def _model(layers: int, hidden: int, heads: int, vocab: int, seq: int) -> dict:
    # No dropout: with a few hundred steps on a small corpus nothing overfits, and it learns faster.
    return dict(architecture="glm", num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                vocab_size=vocab, max_sequence_length=seq, hidden_dropout=0.0, attention_dropout=0.0)


def _decoder(preset: str, layers: int, hidden: int, heads: int, vocab: int, seq: int) -> dict:
    """A tiny decoder preset (Llama-style: GQA with 2 KV heads, the teacher's head untied, the
    student's tied) at the GLM story's depth and width; SwiGLU width 8h/3 as Llama's."""
    return dict(_model(layers, hidden, heads, vocab, seq), architecture="decoder", preset=preset,
                num_key_value_heads=2, ffn_hidden_size=hidden * 8 // 3)


def models(architecture: str, vocab: int, seq: int):
    """(teacher, student) model sections: 4 layers x 192 and 2 layers x 96 in both families."""
    if architecture == "decoder":
        return (_decoder("tiny-decoder-teacher", 4, 192, 6, vocab, seq),
                _decoder("tiny-decoder-student", 2, 96, 4, vocab, seq))
    return _model(4, 192, 6, vocab, seq), _model(2, 96, 4, vocab, seq)


def tokenizer_file(workdir: str, architecture: str) -> str:
    return os.path.join(workdir, "data", "tokenizer.json" if architecture == "decoder" else "tokenizer.model")


def _run(mode: str, model: dict, workdir: str, name: str, iterations: int, lr: float, seq: int, batch: int,
         teacher: str = None, resume: bool = False, temperature: float = 15.0) -> dict:
    return {
        "mode": mode, "model": model, "teacher_checkpoint": teacher, "loss": {"temperature": temperature},
        "train": {"iterations": iterations, "micro_batch_size": batch, "global_batch_size": batch, "seed": 1234},
        "optimizer": {"lr": lr, "min_lr": lr / 10, "warmup_iters": max(iterations // 20, 1)},
        "data": {"train_prefix": os.path.join(workdir, "data", "train"),
                 "valid_prefix": os.path.join(workdir, "data", "valid"),
                 "tokenizer_model": tokenizer_file(workdir, model["architecture"]), "seq_length": seq},
        "checkpoint": {"save_dir": os.path.join(workdir, name), "resume": resume},
        "logging": {"log_interval": max(iterations // 5, 1), "eval_iters": 8,
                    "tensorboard_dir": os.path.join(workdir, name, "tensorboard")},
    }


def prepare_data(workdir: str, vocab_size: int, architecture: str = "glm", log=print) -> int:
    """Corpus, tokenizer and preprocessed splits under ``workdir/data``; returns the vocabulary size."""
    from ..data.hf_tokenizer import train_byte_level_bpe
    from ..data.preprocess import preprocess
    from ..data.tokenizer import load_tokenizer, train_sentencepiece
    from ..data.python_docs import python_documents, split_documents, write_corpus

    data = os.path.join(workdir, "data")
    os.makedirs(data, exist_ok=True)
    train_docs, valid_docs = split_documents(python_documents())
    write_corpus(train_docs, os.path.join(data, "train.txt"))
    write_corpus(valid_docs, os.path.join(data, "valid.txt"))
    log(f"[1/5] corpus: {len(train_docs)} train / {len(valid_docs)} held-out documents from Python's documentation")
    tokenizer = tokenizer_file(workdir, architecture)
    if architecture == "decoder":
        train_byte_level_bpe(train_docs, vocab_size, tokenizer)
        kind = "byte-level BPE (Hugging Face tokenizers, tokenizer.json)"
    else:
        train_sentencepiece([os.path.join(data, "train.txt")], vocab_size, os.path.join(data, "tokenizer"))
        kind = "SentencePiece"
    vocab = load_tokenizer(tokenizer, TOKENIZER_TYPE[architecture]).vocab_size
    log(f"[2/5] tokenizer: {kind}, {vocab} pieces")
    # preprocess's default per tokenizer type: GLM's documents sentence by sentence (blank infilling masks
    # whole sentences), the byte-level BPE's whole (causal samples use no sentence boundaries).
    for split in ("train", "valid"):
        stats = preprocess([os.path.join(data, f"{split}.txt")], os.path.join(data, split), tokenizer,
                           progress=False, tokenizer_type=TOKENIZER_TYPE[architecture])
        log(f"      {split}: {stats.tokens:,} tokens")
    return vocab


def train_phase(values: dict, label: str, log=print):
    from ..distill.data import build_datasets
    from ..config import run_config_from_dict
    from ..engine.trainer import Trainer

    cfg = run_config_from_dict(values)
    train_data, valid_data = build_datasets(cfg)
    start = time.perf_counter()
    trainer = Trainer(cfg, train_data, valid_data, log=log)
    trainer.train()
    log(f"      {label}: {cfg.train.iterations} iterations in {time.perf_counter() - start:.0f} s")
    return trainer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="glmd-quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--architecture", choices=ARCHITECTURES, default="glm",
                   help="the model family of teacher and students (decoder: Llama-style, byte-level BPE)")
    p.add_argument("--workdir", default="quickstart_out", help="where data, checkpoints and logs go")
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--teacher-iters", type=int, default=300)
    p.add_argument("--student-iters", type=int, default=200)
    p.add_argument("--temperature", type=float, default=15.0, help="GLMD's tau (the paper's 15 by default)")
    p.add_argument("--compare-temperature", type=float, default=1.0,
                   help="also distil a student at this tau, for comparison (0: don't)")
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--student-lr", type=float, default=2e-3)
    p.add_argument("--compress-vocab", type=float, metavar="R_V",
                   help="also distil a student with a compressed vocabulary of ratio r_v in (0, 1]")
    args = p.parse_args(argv)
    if args.compress_vocab is not None and not 0 < args.compress_vocab <= 1:
        print(f"error: --compress-vocab: r_v must be in (0, 1], got {args.compress_vocab}", file=sys.stderr)
        return 2
    if args.architecture == "decoder" and args.vocab_size < BYTE_ALPHABET + 1:
        print(f"error: --vocab-size: a byte-level BPE needs at least {BYTE_ALPHABET + 1} ids (every byte and "
              f"<|endoftext|>), got {args.vocab_size}", file=sys.stderr)
        return 2
    workdir, seq, batch = os.path.abspath(args.workdir), args.seq_length, args.batch_size
    start = time.perf_counter()
    try:
        arch = args.architecture
        vocab = prepare_data(workdir, args.vocab_size, arch)
        teacher_model, student_model = models(arch, vocab, seq)

        print(f"[3/5] teacher: pre-training a {arch} of {teacher_model['num_layers']} layers x "
              f"{teacher_model['hidden_size']} on {OBJECTIVE[arch]}")
        teacher_dir = os.path.join(workdir, "teacher")
        teacher = train_phase(_run("pretrain", teacher_model, workdir, "teacher", args.teacher_iters,
                                   args.teacher_lr, seq, batch), "teacher")
        rows = [("teacher", teacher.evaluate())]
        temperatures = [args.temperature] + ([args.compare_temperature] if args.compare_temperature else [])
        for tau in temperatures:
            name = "student_glmd" if tau == args.temperature else f"student_glmd_tau{tau:g}"
            print(f"[4/5] student: GLMD distillation (tau={tau:g}) of {student_model['num_layers']} layers x "
                  f"{student_model['hidden_size']} from the teacher")
            student = train_phase(_run("distill", student_model, workdir, name, args.student_iters, args.student_lr,
                                       seq, batch, teacher=teacher_dir, temperature=tau), f"GLMD student, tau={tau:g}")
            rows.append((f"student, GLMD (L_sp, tau={tau:g})", student.evaluate()))
        print("[5/5] baseline: the same student from scratch on hard labels, same steps")
        train_phase(_run("pretrain", student_model, workdir, "student_scratch", args.student_iters, args.student_lr,
                         seq, batch), "baseline")
        # To measure the baseline's KL to the teacher, reopen its finished checkpoint in a distill run
        # of the same teacher: it resumes at its last iteration, so it trains no further.
        scratch = train_phase(_run("distill", student_model, workdir, "student_scratch", args.student_iters,
                                   args.student_lr, seq, batch, teacher=teacher_dir, resume=True),
                              "baseline (reopened for evaluation)")
        rows.append(("student, from scratch (hard labels)", scratch.evaluate()))
        if args.compress_vocab:
            comparison = compressed_student(args, workdir, teacher_dir, student_model, teacher.valid_data)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print_results(rows, LOSS_NAME[args.architecture], time.perf_counter() - start)
    if args.compress_vocab:
        print()
        print_comparison(*comparison, loss_name=LOSS_NAME[args.architecture])
    return 0


def print_results(rows, loss_name: str, seconds: float) -> None:
    """The held-out table of both families: ``(label, evaluation metrics)`` rows, the teacher's first."""
    print(f"held-out results ({seconds:.0f} s in all)")
    print(f"  {'model':<38}{loss_name:>22}{'KL to teacher':>16}")
    for label, metrics in rows:
        kl = f"{metrics['kl']:.4f}" if label != "teacher" else "-"
        print(f"  {label:<38}{metrics['student_loss']:>22.4f}{kl:>16}")


def compressed_student(args, workdir: str, teacher_dir: str, student_model: dict, valid_data):
    """Frequencies, the artifact, and a compressed GLMD student (same steps and tau as the first GLMD
    student); returns the arguments of ``print_comparison``."""
    from .quickstart_compress import compare, count_frequencies, slice_teacher

    ratio, tau = args.compress_vocab, args.temperature
    print(f"[compress 1/2] vocabulary: token frequencies of the training split, the teacher's embeddings "
          f"sliced at r_v = {ratio:g}")
    arch = args.architecture
    frequencies = count_frequencies(workdir, tokenizer_file(workdir, arch), TOKENIZER_TYPE[arch])
    artifact = slice_teacher(workdir, teacher_dir, frequencies, ratio, student_model["hidden_size"])
    print(f"[compress 2/2] student: GLMD distillation (tau={tau:g}) with the compressed vocabulary, same steps")
    values = _run("distill", student_model, workdir, "student_compressed", args.student_iters, args.student_lr,
                  args.seq_length, args.batch_size, teacher=teacher_dir, temperature=tau)
    values["vocab_compression"] = {"artifact": artifact}
    student = train_phase(values, "compressed GLMD student")
    rows = compare([(f"student, full vocabulary (tau={tau:g})", os.path.join(workdir, "student_glmd")),
                    (f"student, r_v = {ratio:g} (tau={tau:g})", os.path.join(workdir, "student_compressed"))],
                   teacher_dir, artifact, valid_data)
    return rows, ratio, student.cfg.model.vocab_size, student_model["vocab_size"]


if __name__ == "__main__":
    sys.exit(main())
