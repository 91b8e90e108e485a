"""`sparksched calibration`: STS temperatures in SGLang's DSpark JSON format (fit, export, show, apply).

    sparksched calibration fit rounds.jsonl -o sts.json          # fit STS on recorded rounds
    sparksched calibration export --head markov -o sts.json      # a trained drafter's temperatures
    sparksched calibration show sts.json [--rounds rounds.jsonl] # read (SGLang's) file, evaluate it
    sparksched calibration apply sts.json rounds.jsonl -o calibrated.jsonl   # for the simulator

Thin shell over `sparksched.calibration` (the method) and `sparksched.sts_io` (the file format).
"""

from __future__ import annotations

from pathlib import Path

import click

from sparksched.commands._common import quiet_option, runtime_errors


@click.group(epilog="""\b
Examples:
  sparksched calibration fit rounds.jsonl --dataset chat -o sts.json
  sparksched calibration show sts.json --rounds rounds.jsonl
""")
def calibration() -> None:
    """STS calibration files in SGLang's DSpark format: fit, export, show (import) and apply."""


def _report_text(rep) -> str:
    return rep.to_text()


@calibration.command(epilog="""\b
Example:
  sparksched calibration fit rounds.jsonl --dataset chat -o sts.json
""")
@click.argument("rounds", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="STS JSON to write.")
@click.option("--dataset", default=None, help="What the rounds were recorded on [default: the file name].")
@quiet_option
def fit(rounds: str, out: str, dataset: str | None, quiet: bool) -> None:
    """Fit STS temperatures on recorded rounds (raw confidences) and write SGLang's STS JSON."""
    with runtime_errors():
        from simulator.files import write_json
        from sparksched.calibration import calibration_report
        from sparksched.rounds import read_rounds
        from sparksched.sts_io import sts_document

        rs = read_rounds(rounds)
        rep = calibration_report(rs.conf, rs.accepted, rs.verified)
        doc = sts_document(rep.temps, dataset=dataset or Path(rounds).name, num_samples=len(rs),
                           ece_before=rep.ece_before, ece_after=rep.ece_after, counts=rep.count)
        write_json(out, doc)
    if not quiet:
        click.echo(_report_text(rep))
        click.echo(f"ECE {doc['ece_before']:.4f} -> {doc['ece_after']:.4f} over {len(rs)} rounds -> {out}")


@calibration.command(epilog="""\b
Example:
  sparksched calibration export --head markov -o sts.json
""")
@click.option("--checkpoints", default=None, type=click.Path(file_okay=False),
              help="Checkpoint directory [default: the bundled one].")
@click.option("--head", default="markov", show_default=True, help="Drafter head: markov, rnn, none.")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="STS JSON to write.")
@quiet_option
def export(checkpoints: str | None, head: str, out: str, quiet: bool) -> None:
    """Write a trained drafter's STS temperatures (and their held-out ECE) as SGLang's STS JSON."""
    with runtime_errors():
        import torch

        from simulator.files import write_json
        from sparksched.sts_io import sts_document
        from sparksched.training.checkpoint import BUNDLED

        path = Path(checkpoints or BUNDLED) / f"drafter-{head}.pt"
        if not path.exists():
            raise ValueError(f"{path}: no such drafter checkpoint")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # not a torch checkpoint
            raise ValueError(f"{path}: cannot load ({' '.join(str(exc).split())[:120]})") from None
        if "sts" not in blob:
            raise ValueError(f"{path}: field 'sts': the checkpoint has no STS temperatures")
        ev = (blob.get("meta") or {}).get("eval", {})
        doc = sts_document(blob["sts"], dataset=f"sparksched held-out prompts ({path.name})",
                           num_samples=ev.get("rounds"), ece_before=ev.get("ece_before"), ece_after=ev.get("ece_after"))
        write_json(out, doc)
    if not quiet:
        click.echo(f"{len(doc['temperatures'])} temperatures from {path} -> {out}")


@calibration.command(epilog="""\b
Examples:
  sparksched calibration show sts.json
  sparksched calibration show sglang_sts.json --rounds rounds.jsonl
""")
@click.argument("sts", type=click.Path(dir_okay=False))
@click.option("--rounds", default=None, type=click.Path(dir_okay=False),
              help="Recorded rounds to evaluate the temperatures on (ECE before / after per position).")
def show(sts: str, rounds: str | None) -> None:
    """Read an STS JSON (ours or SGLang's), print it, and evaluate it on recorded rounds."""
    with runtime_errors():
        from sparksched.calibration import calibration_report
        from sparksched.rounds import read_rounds
        from sparksched.sts_io import read_sts_json

        f = read_sts_json(sts)
        lines = [f"{sts}: {f.temperatures.size} positions, dataset {f.dataset}, {f.num_samples} samples, "
                 f"ECE {f.ece_before} -> {f.ece_after}",
                 "temperatures: " + " ".join(f"{t:.3f}" for t in f.temperatures)]
        if rounds is not None:
            rs = read_rounds(rounds)
            if rs.block != f.temperatures.size:
                raise ValueError(f"{rounds}: block {rs.block} does not match the {f.temperatures.size} temperatures "
                                 f"of {sts}")
            lines.append(_report_text(calibration_report(rs.conf, rs.accepted, rs.verified, temps=f.temperatures)))
    click.echo("\n".join(lines))


@calibration.command(epilog="""\b
Example:
  sparksched calibration apply sglang_sts.json rounds.jsonl -o calibrated.jsonl
  sparksched simulate --trace chat --acceptance calibrated.jsonl -o runs/calibrated
""")
@click.argument("sts", type=click.Path(dir_okay=False))
@click.argument("rounds", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Recorded rounds with calibrated confidences (.jsonl, .jsonl.gz or .parquet).")
@quiet_option
def apply(sts: str, rounds: str, out: str, quiet: bool) -> None:
    """Apply an STS JSON to recorded rounds' confidences (c' = sigmoid(logit(c) / T_k)); write new rounds."""
    with runtime_errors():
        from sparksched.calibration import apply_sts
        from sparksched.rounds import read_rounds, write_rounds
        from sparksched.sts_io import read_sts_json

        f = read_sts_json(sts)
        rs = read_rounds(rounds)
        if rs.block != f.temperatures.size:
            raise ValueError(f"{rounds}: block {rs.block} does not match the {f.temperatures.size} temperatures of {sts}")
        conf = apply_sts(rs.conf, f.temperatures)
        rows = [{"request": str(rs.request[i]), "step": int(rs.step[i]), "domain": str(rs.domain[i]),
                 "conf": [float(c) for c in conf[i]], "drafted": int(rs.drafted[i]),
                 "verified": int(rs.verified[i]), "accepted": int(rs.accepted[i])} for i in range(len(rs))]
        n = write_rounds(out, rows)
    if not quiet:
        click.echo(f"{n} rounds calibrated with {sts} -> {out}")
