"""`sparksched train`: build the corpora, train the tokenizer + target, train and calibrate drafters.

Regenerate the bundled checkpoints (sparksched/data/checkpoints/) with one command:

    sparksched train all --out sparksched/data/checkpoints --seed 0

which runs `train target` then `train drafter --head markov,rnn,none` with the defaults below
(about 1 hour on one thread of an idle 2-core machine, 2 hours with the cores shared).
Every file is written to a temp file and renamed, so an interrupted run leaves no half-written
checkpoint. Logs (losses, held-out perplexity / acceptance, STS temperatures, ablation metrics) go
to `<out>/train_log.json`.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import click

HEADS = ("markov", "rnn", "none")


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr)


def _update_log(out: Path, key: str, value: dict) -> None:
    from sparksched.io import write_text

    path = out / "train_log.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    log[key] = value
    write_text(path, json.dumps(log, indent=1, sort_keys=True) + "\n")


def _data(out: Path, max_chars: int, seed: int):
    from sparksched.training.corpus import build_corpus
    from sparksched.training.data import tokenize_corpus
    from sparksched.training.tokenizer import load_tokenizer

    tok_path = out / "tokenizer.json"
    if not tok_path.exists():
        raise ValueError(f"{tok_path}: no tokenizer (run `sparksched train target --out {out}` first)")
    corpus = build_corpus(max_chars=max_chars, seed=seed)
    return corpus, tokenize_corpus(corpus, load_tokenizer(str(tok_path)))


def run_target(out: Path, preset: str, steps: int, batch: int, length: int, lr: float, vocab: int,
               max_chars: int, seed: int, threads: int) -> dict:
    """Corpus -> tokenizer.json -> target.pt in `out`; returns the log entry."""
    import torch

    from sparksched.io import write_text
    from sparksched.models.presets import get_preset
    from sparksched.training.checkpoint import save_heldout, save_target
    from sparksched.training.corpus import build_corpus
    from sparksched.training.data import tokenize_corpus
    from sparksched.training.target import train_target
    from sparksched.training.tokenizer import train_tokenizer

    torch.set_num_threads(threads)
    config = get_preset(preset)
    if config.vocab_size != vocab:
        config = config.with_(vocab_size=vocab, name=f"{preset}-v{vocab}")
    click.echo(f"corpus: stdlib code / prose + generated math (max {max_chars} chars per domain)", err=True)
    corpus = build_corpus(max_chars=max_chars, seed=seed)
    tok = train_tokenizer([d for dom in corpus.train for d in corpus.train[dom]], vocab)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "tokenizer.json", tok.to_str())
    data = tokenize_corpus(corpus, tok)
    with _bar(steps, "target") as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
        model, log = train_target(config, data, steps=steps, batch=batch, length=length, lr=lr, seed=seed,
                                  progress=progress)
    entry = {"preset": config.name, "params": config.parameters(), "steps": steps, "batch": batch, "length": length,
             "lr": lr, "seed": seed, "seconds": round(log.seconds, 1), "final_train_loss": log.final_loss(),
             "loss_curve": [round(x, 4) for x in log.losses[:: max(1, steps // 50)]],
             "heldout_perplexity": log.heldout, "corpus": corpus.source, "corpus_chars": corpus.chars(),
             "train_tokens": {d: int(v.size) for d, v in data.train.items()},
             "heldout_tokens": {d: int(v.size) for d, v in data.heldout.items()},
             "torch": str(torch.__version__), "python": platform.python_version()}
    save_target(model, out / "target.pt", meta=entry)
    save_heldout(data.heldout, out / "heldout.npz")
    _update_log(out, "target", entry)
    return entry


def run_drafter(out: Path, head: str, block: int, layers: int, rank: int, steps: int, batch: int, lr: float,
                max_chars: int, seed: int, threads: int, calib_prompts: int, data=None, width: int = 0) -> dict:
    """Train, calibrate (STS on held-out rounds) and evaluate one drafter; writes drafter-<head>.pt."""
    import torch

    from sparksched.models.drafter import DrafterConfig
    from sparksched.training.checkpoint import load_target, save_drafter
    from sparksched.training.drafter import train_drafter
    from sparksched.training.rounds import calibrate_drafter, evaluate_drafter

    torch.set_num_threads(threads)
    target_path = out / "target.pt"
    if not target_path.exists():
        raise ValueError(f"{target_path}: no target (run `sparksched train target --out {out}` first)")
    target = load_target(target_path)
    if data is None:
        _, data = _data(out, max_chars, seed)
    tl = target.config.layers
    config = DrafterConfig(block=block, layers=layers, width=width, head=head, rank=rank,
                           target_layers=tuple(sorted({0, tl // 2, tl - 1})) if tl > 2 else tuple(range(tl)))
    with _bar(steps, f"drafter-{head}") as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
        drafter, log = train_drafter(target, config, data, steps=steps, batch=batch, lr=lr, seed=seed,
                                     progress=progress)
    temps, _ = calibrate_drafter(target, drafter, data, per_domain=calib_prompts, seed=seed)
    ev = evaluate_drafter(target, drafter, data, per_domain=calib_prompts, seed=seed + 1)
    entry = {"config": config.to_dict(), "params": drafter.trainable_parameters(), "steps": steps, "batch": batch,
             "lr": lr, "seed": seed, "seconds": round(log.seconds, 1), "final_train_loss": log.final_loss(),
             "final_terms": log.extra["terms"], "loss_curve": [round(x, 4) for x in log.losses[:: max(1, steps // 50)]],
             "heldout_teacher_forced_tau": log.heldout, "sts_temps": [float(t) for t in temps], "eval": ev}
    save_drafter(drafter, out / f"drafter-{head}.pt", meta=entry)
    _update_log(out, f"drafter-{head}", entry)
    return entry


def _heads(text: str) -> list[str]:
    heads = [h.strip() for h in text.split(",") if h.strip()]
    bad = [h for h in heads if h not in HEADS]
    if bad or not heads:
        raise click.BadParameter(f"--head: unknown head(s) {bad or text!r}; known: {', '.join(HEADS)}")
    return heads


_out = click.option("-o", "--out", "out", default="sparksched/data/checkpoints", show_default=True,
                    type=click.Path(file_okay=False), help="Checkpoint directory.")
_seed = click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
_threads = click.option("--threads", default=1, show_default=True, type=int,
                        help="CPU threads for torch (1: tiny models run faster and steadier on a shared host).")
_chars = click.option("--max-chars", default=3_000_000, show_default=True, type=int,
                      help="Training characters per domain.")


@click.group(epilog="""\b
Example:
  sparksched train all -o sparksched/data/checkpoints
""")
def train() -> None:
    """Train the small target and DSpark drafters on corpora found on every machine."""


def _target_options(f):
    for opt in reversed([
        click.option("--preset", default="tiny-deep", show_default=True, help="Target shape (a model preset)."),
        click.option("--target-steps", "target_steps", default=1200, show_default=True, type=int,
                     help="Target training steps."),
        click.option("--target-batch", "target_batch", default=32, show_default=True, type=int, help="Windows per step."),
        click.option("--length", default=128, show_default=True, type=int, help="Tokens per window."),
        click.option("--target-lr", "target_lr", default=3e-3, show_default=True, type=float, help="Peak learning rate."),
        click.option("--vocab", default=4096, show_default=True, type=int, help="BPE vocabulary size."),
    ]):
        f = opt(f)
    return f


def _drafter_options(f):
    for opt in reversed([
        click.option("--head", "head", default="markov,rnn,none", show_default=True,
                     help="Sequential head(s), comma separated: markov, rnn, none."),
        click.option("--block", default=7, show_default=True, type=int, help="Block size g."),
        click.option("--layers", default=1, show_default=True, type=int, help="Draft backbone layers."),
        click.option("--drafter-width", "width", default=0, show_default=True, type=int,
                     help="Draft width (0: the target's hidden size)."),
        click.option("--rank", default=64, show_default=True, type=int, help="Markov / RNN rank r."),
        click.option("--drafter-steps", default=2400, show_default=True, type=int, help="Drafter training steps."),
        click.option("--drafter-batch", default=16, show_default=True, type=int, help="Windows per step."),
        click.option("--drafter-lr", default=3e-3, show_default=True, type=float, help="Peak learning rate."),
        click.option("--calib-prompts", default=64, show_default=True, type=int,
                     help="Held-out prompts per domain for STS fitting (and as many for evaluation)."),
    ]):
        f = opt(f)
    return f


@train.command("target", epilog="""\b
Example:
  sparksched train target --target-steps 600 -o checkpoints
""")
@_out
@_target_options
@_chars
@_seed
@_threads
def target_cmd(out, preset, target_steps, target_batch, length, target_lr, vocab, max_chars, seed, threads) -> None:
    """Build the corpora, train the BPE tokenizer and the target; write tokenizer.json + target.pt."""
    try:
        e = run_target(Path(out), preset, target_steps, target_batch, length, target_lr, vocab, max_chars, seed, threads)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"target: {e['params']} params, {e['seconds']} s, final train loss {e['final_train_loss']:.3f}, "
               f"held-out perplexity {json.dumps({k: round(v, 2) for k, v in e['heldout_perplexity'].items()})}")


@train.command("drafter", epilog="""\b
Example:
  sparksched train drafter --head markov --block 7 -o checkpoints
""")
@_out
@_drafter_options
@_chars
@_seed
@_threads
def drafter_cmd(out, head, block, layers, width, rank, drafter_steps, drafter_batch, drafter_lr, calib_prompts,
                max_chars, seed, threads) -> None:
    """Train, STS-calibrate and evaluate drafter(s) for the target in --out; write drafter-<head>.pt."""
    try:
        _run_drafters(Path(out), _heads(head), block, layers, rank, drafter_steps, drafter_batch, drafter_lr,
                      max_chars, seed, threads, calib_prompts, width)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _run_drafters(out, heads, block, layers, rank, steps, batch, lr, max_chars, seed, threads, calib_prompts,
                  width=0):
    _, data = _data(out, max_chars, seed)
    for h in heads:
        e = run_drafter(out, h, block, layers, rank, steps, batch, lr, max_chars, seed, threads, calib_prompts, data,
                        width)
        click.echo(f"drafter-{h}: {e['params']} params, {e['seconds']} s, accepted per round "
                   f"{json.dumps({k: round(v, 3) for k, v in e['eval']['accepted'].items()})}")


@train.command("all", epilog="""\b
Example:
  sparksched train all -o sparksched/data/checkpoints
""")
@_out
@_target_options
@_drafter_options
@_chars
@_seed
@_threads
def all_cmd(out, preset, target_steps, target_batch, length, target_lr, vocab, head, block, layers, width, rank,
            drafter_steps, drafter_batch, drafter_lr, calib_prompts, max_chars, seed, threads) -> None:
    """`train target` then `train drafter` (regenerates the bundled checkpoints)."""
    try:
        e = run_target(Path(out), preset, target_steps, target_batch, length, target_lr, vocab, max_chars, seed, threads)
        click.echo(f"target: held-out perplexity {json.dumps({k: round(v, 2) for k, v in e['heldout_perplexity'].items()})}")
        _run_drafters(Path(out), _heads(head), block, layers, rank, drafter_steps, drafter_batch, drafter_lr,
                      max_chars, seed, threads, calib_prompts, width)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
