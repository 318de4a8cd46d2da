"""The commands of the studies' human evaluation and image quality: ``user-study``,
``user-study-score`` and ``fid`` (registered on ``stylex_port.cli.main``)."""
from __future__ import annotations

from pathlib import Path

import click

from stylex_port.cli_common import existing, log_line, progress_bar, user_errors


@click.command("user-study")
@click.option("--attfind-out", required=True, type=click.Path(file_okay=False),
              help="The output folder of `cli.py attfind` (its attfind.json names the weights and dlatents).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Writes study/ (index.html and its animations: what participants get) and key.json (the answers).")
@click.option("--weights", type=click.Path(), default=None, help="The converted release folder [default: the run's].")
@click.option("--dlatents", "dlatents_path", type=click.Path(), default=None, help="dlatents.pkl [default: the run's].")
@click.option("--attributes", default=4, show_default=True, help="Top AttFind attributes in the study.")
@click.option("--examples", default=4, show_default=True, help="Animations per attribute panel.")
@click.option("--queries", default=2, show_default=True, help="Classification questions per attribute.")
@click.option("--frames", default=8, show_default=True, help="Animation steps from the image to the whole shift.")
@click.option("--seed", default=0, show_default=True, help="Seed of the questions' pairs, sides and order.")
@click.option("--max-images", type=int, default=None, help="Choose the animated images among the first N dlatents.")
@click.option("--device", default="cpu", show_default=True)
@user_errors
def user_study(attfind_out, out_dir, weights, dlatents_path, attributes, examples, queries, frames, seed, max_images,
               device):
    """Write a static user study of AttFind's top attributes (the paper's classification and
    verbal-description designs): one page a participant opens from a file; answers are
    downloaded by the participant as a CSV (docs/studies.md)."""
    from stylex_port.analyses.user_study import StudyOptions, build_study

    opts = StudyOptions(attributes=attributes, examples=examples, queries=queries, frames=frames, seed=seed,
                        device=device, max_images=max_images)
    key = build_study(Path(existing(attfind_out)), Path(out_dir), opts,
                      weights=Path(existing(weights)) if weights else None,
                      dlatents_path=Path(existing(dlatents_path)) if dlatents_path else None,
                      bar=progress_bar, log=log_line)
    click.echo(f"study {key['study_id']}: {len(key['questions'])} questions")
    click.echo(f"wrote {Path(out_dir) / 'study' / 'index.html'} (send the study/ folder to participants)")
    click.echo(f"wrote {Path(out_dir) / 'key.json'} (the answers: keep it for user-study-score)")


@click.command("user-study-score")
@click.option("--responses", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="A participant's downloaded CSV (repeatable; shell globs work: --responses a.csv --responses b.csv).")
@click.option("--study", "study_dir", required=True, type=click.Path(file_okay=False),
              help="The --out folder of `cli.py user-study` (with key.json).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: <study>/score].")
@click.option("--bootstrap", default=1000, show_default=True, help="Resamples of the participants for the intervals.")
@click.option("--seed", default=0, show_default=True)
@user_errors
def user_study_score(responses, study_dir, out_dir, bootstrap, seed):
    """Score a user study: accuracy per attribute and overall (mean, std and bootstrap interval
    over participants), the most common words per attribute; a table and a plot."""
    from stylex_port.analyses.study_score import format_score_table, score, write_score

    doc = score(Path(existing(study_dir)), [Path(p) for p in responses], resamples=bootstrap, seed=seed)
    click.echo(format_score_table(doc), nl=False)
    for f in write_score(doc, Path(out_dir) if out_dir else Path(study_dir) / "score"):
        click.echo(f"wrote {f}")


@click.command("fid")
@click.option("--weights", required=True, type=click.Path(), help="A converted release folder.")
@click.option("--dlatents", "dlatents_path", required=True, type=click.Path(), help="dlatents.pkl.")
@click.option("--inception-weights", required=True, type=click.Path(dir_okay=False),
              help="pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth).")
@click.option("--k", "k_text", default="1..10", show_default=True,
              help="Attributes changed per image: K or FIRST..K (one FID per k).")
@click.option("--attfind-out", default=None, type=click.Path(file_okay=False),
              help="The cli.py attfind output whose effect cache the ranking comes from "
                   "[default: runs/attfind/<weights folder name>]; computed and cached there if absent.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/fid/<weights folder name>].")
@click.option("--max-images", type=int, default=None, help="Use only the first N dlatents.")
@click.option("--device", default="cpu", show_default=True)
@user_errors
def fid(weights, dlatents_path, inception_weights, k_text, attfind_out, out_dir, max_images, device):
    """FID between the reconstructions and the images with their top 1..k AttFind attributes
    changed (towards the other class), on pytorch-fid's Inception features; a table and a plot."""
    from stylex_port.analyses.fid import format_fid_table, parse_k, run_fid

    out = Path(out_dir) if out_dir else Path("runs") / "fid" / Path(weights).name
    doc = run_fid(Path(existing(weights)), Path(existing(dlatents_path)), Path(inception_weights), out,
                  parse_k(k_text), attfind_out=Path(attfind_out) if attfind_out else None,
                  max_images=max_images, device=device, bar=progress_bar, log=log_line)
    click.echo(format_fid_table(doc), nl=False)
    for name in ("fid.md", "fid.json", "fid.png"):
        click.echo(f"wrote {out / name}")


COMMANDS = (user_study, user_study_score, fid)
