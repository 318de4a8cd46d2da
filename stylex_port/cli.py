"""Command line: make a reference release, inspect, convert and verify StylEx checkpoints; AttFind.

    python cli.py download celeb_a_age
    python cli.py make-reference --out reference
    python cli.py inspect --tf-ckpt reference/mobilenet.savedmodel.zip
    python cli.py convert --tf-ckpt reference/mobilenet.savedmodel.zip
    python cli.py verify  --tf-ckpt reference/mobilenet.savedmodel.zip --weights weights/mobilenet.safetensors
    python cli.py attfind --weights weights/reference --dlatents reference/dlatents.pkl
    python cli.py export-onnx --weights weights/reference --out onnx/reference
    python cli.py train-classifier --data data/digits89 --out runs/clf89
    python cli.py train --data data/digits89 --classifier runs/clf89 --out runs/stylex89
    python cli.py export-tf --weights runs/stylex89/weights --out release89

Bad input ends with one line on stderr and exit code 2; a failed verification with exit code 1.

The top of the project's layers: it may import every package (``crosscheck`` for what needs
TF's models and the port together). The model kinds the options offer come from the registry
(``porting.kinds.NAMES``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's start-up chatter hides our output

try:
    import click  # noqa: E402
except ImportError:                                        # the base install: models_pt only
    sys.exit("error: the command line needs an extra: pip install 'stylex-port[tf]' (conversion, verify) "
             "or 'stylex-port[attfind]'")
from attfind import truth as truth_defaults  # noqa: E402  (NumPy only)
from porting.kinds import NAMES as KIND_NAMES  # noqa: E402  (the registry: no TF, no torch)
from stylex_port.cli_common import (EXIT_BAD_INPUT, EXIT_FAILED, existing, log_line,  # noqa: E402,F401
                                    progress_bar, user_errors)
from stylex_port.cli_studies import COMMANDS  # noqa: E402
from stylex_port.cli_train import COMMANDS as TRAIN_COMMANDS  # noqa: E402
from models_pt.release_facts import DEFAULT_RELEASE, DLATENTS_FILE  # noqa: E402


def keras_builder(kind: str, config: dict):
    """``crosscheck.tf_side.build_keras``, imported when a nameless Keras ``.weights.h5`` needs it
    (the command line starts without TensorFlow)."""
    from crosscheck.tf_side import build_keras

    return build_keras(kind, config)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Bring the released TensorFlow StylEx models into PyTorch, and prove the port exact.

    Kernel switches, read from the environment when a command starts (docs/verification.md):
    TF_ENABLE_ONEDNN_OPTS=0/1 (TF's oneDNN or Eigen kernels), ONEDNN_MAX_CPU_ISA (oneDNN's
    instruction set, both frameworks), STYLEX_TORCH_ONEDNN=0 (PyTorch without oneDNN)."""
    if os.environ.get("STYLEX_TORCH_ONEDNN", "1").strip() in ("0", "off", "false"):
        import torch

        torch.backends.mkldnn.enabled = False


@main.command("make-reference")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the reference release into.")
@click.option("--seed", default=0, show_default=True, help="Seed of every weight.")
@click.option("--resolution", default=64, show_default=True,
              help="Image size of every model; 256 is the release's configuration.")
@click.option("--num-dlatents", default=32, show_default=True,
              help="Entries of dlatents.pkl and images of examples_1.tfrecord (the release has 250).")
@click.option("--channel-max", default=16, show_default=True,
              help="Cap on the generator's channel widths (the release's is 512). AttFind's TF sweep "
                   "costs one generator pass per coordinate and direction, and there are 9 x this many "
                   "coordinates at 64 px.")
@click.option("--resnet-channel-max", type=int, default=None,
              help="Cap on the encoder's and discriminator's widths [default: the release's 512]; a small "
                   "cap (32) makes them cheap to train (examples/finetune.py).")
@click.option("--attfind/--no-attfind", default=True, show_default=True,
              help="Plant an attribute in the classifier and write examples_1.tfrecord (TF backend).")
@user_errors
def make_reference(out_dir, seed, resolution, num_dlatents, channel_max, resnet_channel_max, attfind):
    """Write seeded TF models in the released file layout (a 'reference release')."""
    from crosscheck.reference_release import make_reference as make

    info = make(Path(out_dir), seed=seed, resolution=resolution, num_dlatents=num_dlatents,
                channel_max=channel_max, attfind=attfind, bar=progress_bar, resnet_channel_max=resnet_channel_max,
                progress=lambda msg: click.echo(f"  {msg}", err=True))
    for name, f in info["files"].items():
        click.echo(f"wrote {Path(out_dir) / f}")
    click.echo(f"wrote {Path(out_dir) / 'reference.json'}")
    if "planted" in info:
        p = info["planted"]
        click.echo(f"planted attribute: coordinate {p['coordinate']}, direction {p['direction']}")


@main.command()
@click.argument("name", default=DEFAULT_RELEASE)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the release [default: ./NAME].")
@click.option("--base-url", default=None,
              help="Where the files are [default: the notebook's bucket, "
                   "https://storage.googleapis.com/explaining-in-style/NAME/].")
@click.option("--retries", default=4, show_default=True, help="Tries after the first, with exponential backoff.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds without an answer before a try fails.")
@user_errors
def download(name, out_dir, base_url, retries, timeout):
    """Fetch a released model folder (four *.savedmodel.zip, dlatents.pkl, examples_1.tfrecord).

    Resumes partial files, retries, checks each file before it takes its final name, records
    URL, size and sha256 in release.json, and fetches nothing again that is complete and
    unchanged. Exit 1 when a file is missing on the server or was refused (listed)."""
    from stylex_port.download import download as fetch

    def bar(total, label, initial=0):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                    file=sys.stderr, mininterval=0.5,
                    disable=None if not os.environ.get("STYLEX_PROGRESS") else False)

    try:
        out, outcome = fetch(name, Path(out_dir) if out_dir else None, base_url, retries=retries, timeout=timeout,
                             bar=bar, log=log_line)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: complete files keep their names, a partial one stays as <name>.part in "
                   f"{out_dir or name}; the same command resumes from there", err=True)
        sys.exit(130)
    for f in outcome.fetched:
        how = f" (resumed at byte {outcome.resumed[f]:,})" if f in outcome.resumed else ""
        click.echo(f"{f:<30} fetched{how}" + (f"; changed on the server: {outcome.changed[f]}" if f in outcome.changed
                                               else ""))
    for f in outcome.unchanged:
        click.echo(f"{f:<30} complete and unchanged")
    for f in outcome.missing:
        click.echo(f"{f:<30} MISSING on the server")
    for f, why in outcome.failed.items():
        click.echo(f"{f:<30} FAILED: {why}")
    click.echo(f"release: {out} (manifest {out / 'release.json'})")
    sys.exit(0 if outcome.ok else EXIT_FAILED)


def trust_graph_option(what: str):
    """``--trust-graph``: the one opt-out of porting.graph_scan's checks, worded per command."""
    return click.option("--trust-graph", is_flag=True, help=what + " (docs/security.md).")


GRAPH_HELP = ("Load the release's SavedModels without first checking that their graphs hold only the release's "
              "ops and Keras classes, and read a whole-model .h5 whose config names other classes (a SavedModel "
              "is a program: only for files you trust)")
H5_HELP = ("Read a whole-model Keras .h5 whose config names layer classes outside the release's (a Lambda "
           "carries Python code; this reader never runs it, but the file is not the release's)")


@main.command()
@click.option("--tf-ckpt", required=True, help="SavedModel folder or zip, TF checkpoint, or Keras .h5.")
@click.option("--model", type=click.Choice(KIND_NAMES),
              help="Force the model kind instead of detecting it from the variables.")
@trust_graph_option(H5_HELP)
@user_errors
def inspect(tf_ckpt, model, trust_graph):
    """List every variable, its shape and the PyTorch parameter it maps to (or 'unused')."""
    from porting.convert import prepare
    from porting.readers import open_checkpoint

    with open_checkpoint(existing(tf_ckpt), build_keras=keras_builder, trust_graph=trust_graph) as ck:
        prep = prepare(ck.names, ck.shapes, tf_ckpt, model, allow_unused=True)
        kind, config, mplan = prep.kind, prep.config, prep.plan
        targets = mplan.tf_to_pt()
        rule_of = {a.tf_name: a.rule for a in mplan.assignments if a.tf_name}
        click.echo(f"{tf_ckpt}: {ck.fmt}, {len(ck.names)} variables, model kind {kind.name}, config {config}")
        width = max(len(n) for n in ck.names)
        for name in ck.names:
            target = ", ".join(targets.get(name, [])) or "unused"
            how = f"  [{rule_of[name].describe_transform()}]" if name in rule_of else ""
            click.echo(f"{name:<{width}}  {str(list(ck.shapes[name])):<20} -> {target}{how}")
        derived = [a.pt_key for a in mplan.assignments if a.tf_name is None]
        if derived:
            click.echo(f"derived in PyTorch (not loaded): {len(derived)} buffers, e.g. {derived[0]}")
        click.echo(f"{len(ck.names) - len(mplan.unused)} used, {len(mplan.unused)} unused")


@main.command()
@click.option("--tf-ckpt", required=True,
              help="SavedModel folder or zip, TF checkpoint, Keras .h5, or a release folder of *.savedmodel.zip.")
@click.option("--out", type=click.Path(),
              help="Output .safetensors file [default: weights/<name>.safetensors]; for a release "
                   "folder, an output folder [default: weights/<release folder name>].")
@click.option("--model", type=click.Choice(KIND_NAMES),
              help="Force the model kind instead of detecting it from the variables.")
@click.option("--allow-nonfinite", is_flag=True, help="Convert even if a weight holds NaN or Inf.")
@click.option("--allow-unused", is_flag=True,
              help="Convert even if TF variables map to no PyTorch tensor (they are listed); without it, a "
                   "variable the model kind does not expect to leave unused fails the conversion.")
@trust_graph_option(H5_HELP)
@user_errors
def convert(tf_ckpt, out, model, allow_nonfinite, allow_unused, trust_graph):
    """Convert a TF checkpoint (or every model of a release folder) into PyTorch safetensors."""
    from porting.convert import convert_path
    from porting.release import convert_release, is_release_folder

    if is_release_folder(existing(tf_ckpt)):
        if model:
            raise click.BadParameter("a release folder holds several models; --model applies to one",
                                     param_hint="--model")
        result = convert_release(Path(tf_ckpt), out, allow_nonfinite=allow_nonfinite, allow_unused=allow_unused,
                                 build_keras=keras_builder)
        for stem, entry in result.models.items():
            click.echo(f"{stem:<14} {entry['kind']:<14} -> {result.out_dir / entry['weights']}"
                       f" ({len(entry['unused_tf_variables'])} unused TF variables)")
        for stem in result.missing:
            click.echo(f"{stem:<14} missing: no {stem}.savedmodel.zip in {tf_ckpt}")
        for stem, why in result.failed.items():
            click.echo(f"{stem:<14} FAILED: {why}", err=True)
        if result.models:
            click.echo(f"manifest: {result.out_dir / 'manifest.json'}")
        sys.exit(EXIT_BAD_INPUT if result.failed or not result.models else 0)
    path, conv = convert_path(existing(tf_ckpt), out, model=model, allow_nonfinite=allow_nonfinite,
                              allow_unused=allow_unused, build_keras=keras_builder, trust_graph=trust_graph)
    click.echo(f"{conv.kind}: {len(conv.state)} tensors from {conv.header['tf_variables']} TF variables "
               f"({len(conv.plan.unused)} unused) -> {path}")
    for name in conv.plan.unused:
        click.echo(f"  unused: {name}")


@main.command()
@click.option("--tf-ckpt", required=True, help="The TF checkpoint the weights were converted from.")
@click.option("--weights", required=True, help="The converted .safetensors file.")
@click.option("--float64", "use_float64", is_flag=True,
              help="Only the float64 verdict (is the mapping exact?), without the float32 one.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@click.option("--num-images", default=8, show_default=True,
              help="Test inputs per model (the generator's are real released dlatents); more inputs reach "
                   "more of the network's range and steady the verdict, at a linear cost in time.")
@click.option("--size", type=int, help="Input image size [default: the model's].")
@click.option("--seed", default=0, show_default=True, help="Seed of the test inputs.")
@click.option("--train", "train", is_flag=True,
              help="Check training instead of inference: training mode, the input and every parameter "
                   "gradient (TF's mapped through the same rules), BatchNorm's running statistics after "
                   "the step, R1 and path length with their second-order gradients; 4 inputs unless "
                   "--num-images says otherwise.")
@trust_graph_option(GRAPH_HELP)
@user_errors
def verify(tf_ckpt, weights, use_float64, json_path, num_images, size, seed, train, trust_graph):
    """Compare every activation of TF and PyTorch on the same inputs; exit 1 if any is off.

    Two verdicts per activation, both needed: exact (TF and the port in float64 agree within
    1e-9 relative), and fit for float32 (the port's float32 error against TF's float64 run
    within 4x what a model float32 implementation errs, simulated in float64: a bound that does
    not depend on either framework's kernels; docs/verification.md). TF's own float32 error is
    reported for information. --float64: the first verdict alone. With a release folder and a
    converted release folder, verifies every model and the encode-reconstruct round trip, and
    prints one summary."""
    from crosscheck.verify import verify_checkpoint, verify_release
    from porting.atomic import write_json
    from porting.readers import open_checkpoint
    from porting.release import is_release_folder
    from porting.verdict import format_report

    if num_images < 4:
        raise click.BadParameter("need at least 4 inputs (two dlatents can sit too close together to prove "
                                 "anything; the discriminator's minibatch groups are 4)", param_hint="--num-images")
    dtype = "float64" if use_float64 else "float32"
    src, weights_path = existing(tf_ckpt), existing(weights)
    folder = is_release_folder(src)
    if train:
        if size is not None:
            raise click.BadParameter("--train uses each model's own input size", param_hint="--size")
        sys.exit(verify_train(src, folder, weights_path, dtype, json_path, num_images, seed, trust_graph))
    if folder:
        sys.exit(report_all(verify_release(src, weights_path, dtype, num_images, trust_graph=trust_graph), json_path))
    beside = src.resolve().parent / DLATENTS_FILE   # one zip of a release folder: its dlatents
    with open_checkpoint(src, build_keras=keras_builder, trust_graph=trust_graph) as ck:
        report = verify_checkpoint(ck, weights_path, dtype=dtype, num_images=num_images, size=size, seed=seed,
                                   dlatents=beside if beside.exists() else None)
    click.echo(format_report(report))
    if json_path:
        write_json(Path(json_path), report.to_json())
    sys.exit(0 if report.passed else EXIT_FAILED)


def verify_train(src: Path, folder: bool, weights: Path, dtype: str, json_path, num_images: int, seed: int,
                 trust_graph: bool = False) -> int:
    """``verify --train`` of ``src`` (a release ``folder``, or one checkpoint) against the
    existing ``weights``: the exit status."""
    from crosscheck.train_check import verify_training, verify_training_release
    from porting.readers import open_checkpoint
    from porting.train_check import TRAIN_IMAGES

    source = click.get_current_context().get_parameter_source("num_images")
    n = TRAIN_IMAGES if source == click.core.ParameterSource.DEFAULT else num_images
    if n % 4:
        raise click.BadParameter(f"{n}: a training check needs a multiple of 4 inputs (the discriminator's "
                                 "minibatch standard deviation groups images by 4)", param_hint="--num-images")
    if folder:
        reports = verify_training_release(src, weights, dtype, n, seed=seed)
    else:
        with open_checkpoint(src, build_keras=keras_builder, trust_graph=trust_graph) as ck:
            reports = [verify_training(ck, weights, dtype, n, seed=seed)]
    return report_all(reports, json_path)


def report_all(reports: list, json_path) -> int:
    """Every report's table, one summary, the JSON of them all; the exit status."""
    from porting.atomic import write_json
    from porting.verdict import format_summary, format_report

    for r in reports:
        click.echo(format_report(r) + "\n")
    click.echo(format_summary(reports))
    passed = all(r.passed for r in reports)
    if json_path:
        write_json(Path(json_path), {"passed": passed, "models": [r.to_json() for r in reports]})
    return 0 if passed else EXIT_FAILED


@main.command()
@click.option("--weights", required=True, type=click.Path(),
              help="A converted release folder (cli.py convert --tf-ckpt <release folder>).")
@click.option("--dlatents", "dlatents_path", required=True, type=click.Path(),
              help="dlatents.pkl (the release's format; loaded with a restricted unpickler).")
@click.option("--num-indices", default=8, show_default=True, help="Attributes the greedy search picks per class.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/attfind/<weights folder name>]; holds attfind.json, the "
                   "pictures and the per-image effect cache that lets an interrupted run resume.")
@click.option("--top", default=4, show_default=True, help="Attributes drawn as PNG grids and GIFs.")
@click.option("--examples", default=4, show_default=True, help="Images per drawn attribute.")
@click.option("--independent", is_flag=True, help="Also the image-specific ranking of every image.")
@click.option("--sufficiency", is_flag=True,
              help="Also the sufficiency measure: fraction of images whose class flips when their top-k "
                   "attributes are all changed (with --independent, for both rankings).")
@click.option("--sufficiency-k", default=10, show_default=True, help="k of the sufficiency measure.")
@click.option("--shift-size", default=1.0, show_default=True, help="Fraction of the way to the range's end.")
@click.option("--batch-size", default=128, show_default=True, help="Edited images per forward pass.")
@click.option("--max-images", type=int, default=None, help="Use only the first N dlatents.")
@click.option("--no-pictures", is_flag=True, help="Skip the PNG grids and GIFs.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda (TF32 is turned off).")
@click.option("--compare", type=click.Path(dir_okay=False), default=None,
              help="An examples_1.tfrecord to compare the effects and ranking with [default: the one "
                   "beside --dlatents, if there is one].")
@click.option("--truth-images", default=truth_defaults.DEFAULT_TRUTH_IMAGES, show_default=True,
              help="With a tfrecord of the same images to compare: images whose effects are also computed "
                   "in float64, the truth that TF's and our float32 effects are judged against (0: no verdict).")
@click.option("--truth-coordinates", default=truth_defaults.DEFAULT_TRUTH_COORDINATES, show_default=True,
              help="Coordinates of the float64 truth: spread over StyleSpace, plus the ranking's.")
@click.option("--workers", default=0, show_default=True,
              help="Compute the effects on this many Ray workers (one image per unit of work; a local "
                   "cluster is started unless --ray-address is given). 0: in this process.")
@click.option("--ray-address", default=None,
              help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting one.")
@click.option("--threads-per-worker", type=int, default=None,
              help="torch CPU threads per worker [default: cores // workers on a local cluster, else 1].")
@click.option("--worker-weights", type=click.Path(file_okay=False), default=None,
              help="The converted folder's path as the workers see it [default: --weights]; every worker "
                   "checks the files' sha256 against the driver's manifest.")
@click.option("--discriminator-filter", is_flag=True,
              help="The notebook's use_discriminator: reject a greedy pick when shifting its coordinate "
                   "changes the discriminator's output by more than --discriminator-threshold on any of its "
                   "affected images (up to 10 per direction); what was filtered is recorded in attfind.json.")
@click.option("--discriminator-threshold", default=0.2, show_default=True)
@click.option("--precision", type=click.Choice(["float32", "tf32", "bf16"]), default="float32", show_default=True,
              help="The sweep's arithmetic. tf32 (tensor cores on a GPU; emulated, slower, on a CPU) or bf16: "
                   "the effects are computed as changes carried from the edited layer on (the delta path, whose "
                   "error scales with the effect), every AttFind decision is then re-checked in float32 and the "
                   "ranking is float32's "
                   "(docs/attfind.md, reduced precision); not with --workers, --discriminator-filter or --independent.")
@user_errors
def attfind(weights, dlatents_path, out_dir, no_pictures, compare, worker_weights, **settings):
    """Run AttFind with the PyTorch models: rank the StyleSpace coordinates that flip the classifier.

    With the release's examples_1.tfrecord beside --dlatents (or --compare), TF's effects and ours
    are also judged against the float64 truth; exit 1 when that verdict fails (the outputs are
    still written)."""
    from attfind.report import format_ranking
    from attfind.run import Options, run

    out = Path(out_dir) if out_dir else Path("runs") / "attfind" / Path(weights).name
    if settings["workers"] < 0:
        raise click.BadParameter("must be 0 (this process) or a number of workers", param_hint="--workers")
    # every other option is a field of Options by the same name
    opts = Options(**settings, pictures=not no_pictures, compare=Path(existing(compare)) if compare else None,
                   worker_weights=Path(worker_weights) if worker_weights else None)
    try:
        outcome = run(Path(existing(weights)), Path(existing(dlatents_path)), out, opts, bar=progress_bar,
                      log=log_line)
    except KeyboardInterrupt:
        cache = out / "effects_cache"
        done = len(list(cache.glob("image_*.npz"))) if cache.exists() else 0
        click.echo(f"\ninterrupted: {done} images' effects are in {cache}; the same command resumes from "
                   "there (with or without --workers)", err=True)
        sys.exit(130)
    click.echo(format_ranking(outcome.document))
    eff = outcome.document["effects"]
    if eff["evaluations_per_second"]:
        click.echo(f"effects: {eff['computed_images']} images in {eff['seconds']} s "
                   f"({eff['evaluations_per_second']} evaluations/s), {eff['cached_images']} from the cache")
    for f in outcome.files:
        click.echo(f"wrote {f}")
    verdict = (outcome.document.get("tfrecord") or {}).get("verdict") or {}
    if verdict.get("judged") and not verdict.get("passed"):
        click.echo(f"the effects verdict FAILED (score {verdict['score']:.2f}, <= 1 passes): "
                   f"attfind.json's tfrecord.verdict has every row", err=True)
        sys.exit(EXIT_FAILED)


@main.command("flip-rate")
@click.option("--weights", required=True, type=click.Path(), help="A converted release folder.")
@click.option("--dlatents", "dlatents_path", required=True, type=click.Path(), help="dlatents.pkl.")
@click.option("--k", default=10, show_default=True, help="Attributes changed together (the table's k; the plot: 1..k).")
@click.option("--methods", default="attfind,wu,random", show_default=True,
              help="Comma-separated: attfind, wu, random, ganspace, attfind-own (a control: towards the own class).")
@click.option("--shift-size", default=1.0, show_default=True, help="AttFind's shift rule, for every StyleSpace method.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/flip_rate/<weights folder name>].")
@click.option("--attfind-out", default=None, type=click.Path(file_okay=False),
              help="The cli.py attfind output whose effect cache AttFind's ranking comes from "
                   "[default: runs/attfind/<weights folder name>]; computed and cached there if absent.")
@click.option("--num-indices", default=8, show_default=True, help="AttFind's picks per class.")
@click.option("--random-seeds", default=5, show_default=True)
@click.option("--bootstrap", default=1000, show_default=True, help="Resamples of the images for the intervals.")
@click.option("--wu-select", type=click.Choice(["auto", "top", "threshold"]), default="auto", show_default=True,
              help="Wu et al.'s images of a class: the top --wu-fraction by probability, those above "
                   "--wu-threshold, or auto (the top fraction unless it leaves fewer than 5 images).")
@click.option("--wu-fraction", default=0.02, show_default=True)
@click.option("--wu-threshold", default=0.9, show_default=True)
@click.option("--ganspace-samples", default=2000, show_default=True)
@click.option("--ganspace-layers", default=None, help="Style layers J-K of the GANSpace edits [default: all].")
@click.option("--ganspace-sigma", default=2.0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--max-images", type=int, default=None, help="Use only the first N dlatents.")
@user_errors
def flip_rate(weights, dlatents_path, k, methods, shift_size, out_dir, attfind_out, num_indices, random_seeds,
              bootstrap, wu_select, wu_fraction, wu_threshold, ganspace_samples, ganspace_layers, ganspace_sigma,
              device, max_images):
    """Flip rates of AttFind, Wu et al., random (and GANSpace) when each image's top-k change."""
    from stylex_port.analyses.fliprate import FlipOptions, format_flip_table, run_flip_rate
    from stylex_port.analyses.wu import WuSelection

    out = Path(out_dir) if out_dir else Path("runs") / "flip_rate" / Path(weights).name
    opts = FlipOptions(k=k, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                       shift_size=shift_size, num_indices=num_indices, random_seeds=random_seeds,
                       bootstrap=bootstrap, wu=WuSelection(wu_select, wu_fraction, wu_threshold),
                       ganspace_samples=ganspace_samples, ganspace_layers=ganspace_layers,
                       ganspace_sigma=ganspace_sigma, device=device, max_images=max_images)
    doc = run_flip_rate(Path(existing(weights)), Path(existing(dlatents_path)), out, opts,
                        attfind_out=Path(attfind_out) if attfind_out else None, bar=progress_bar, log=log_line)
    click.echo(format_flip_table(doc))
    click.echo(f"{doc['seconds']} s")
    for name in ("flip_rate.md", "flip_rate.json", "flip_rate.png"):
        click.echo(f"wrote {out / name}")


@main.command()
@click.option("--weights", required=True, type=click.Path(), help="A converted release folder.")
@click.option("--dlatents", "dlatents_path", type=click.Path(), default=None,
              help="The release's dlatents.pkl: their label probabilities are held fixed in the samples, and "
                   "their images are drawn and measured [default: uniform labels, sampled images].")
@click.option("--samples", default=2000, show_default=True, help="z samples for the PCA.")
@click.option("--components", default=10, show_default=True)
@click.option("--layers", default=None, help="Style layers J-K the edits apply to [default: all].")
@click.option("--sigma", default=2.0, show_default=True, help="Largest strength, in units of a component's std.")
@click.option("--rows", default=4, show_default=True, help="Images per grid.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/ganspace/<weights folder name>].")
@user_errors
def ganspace(weights, dlatents_path, samples, components, layers, sigma, rows, seed, device, out_dir):
    """GANSpace on the ported generator: PCA of w, edits on a range of style layers, grids."""
    from models_pt.dlatents import DlatentsError
    from stylex_port.analyses.ganspace import run_ganspace

    out = Path(out_dir) if out_dir else Path("runs") / "ganspace" / Path(weights).name
    try:
        doc = run_ganspace(Path(existing(weights)), out, samples, components, layers, sigma,
                           Path(existing(dlatents_path)) if dlatents_path else None, rows, seed=seed, device=device,
                           log=log_line)
    except DlatentsError:
        raise                         # a bad dlatents.pkl: one line, from user_errors
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"{'component':>9}  {'explained':>9}  {'dP1 at -s':>9}  {'dP1 at +s':>9}")
    for c in doc["classifier"]:
        click.echo(f"{c['component']:>9}  {c['explained_variance']:>9.4f}  {c['prob1_change_at_minus_sigma']:>+9.4f}  "
                   f"{c['prob1_change_at_plus_sigma']:>+9.4f}")
    for name in doc["pictures"] + ["ganspace.json", "basis.npz"]:
        click.echo(f"wrote {out / name}")


@main.command("export-tf")
@click.option("--weights", required=True, type=click.Path(file_okay=False),
              help="A folder with manifest.json: `train`'s weights/, a fine-tuned or a converted release.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="The release folder to write: <stem>.savedmodel.zip per model, as the authors released them.")
@click.option("--dlatents", "dlatents_path", type=click.Path(dir_okay=False), default=None,
              help="A dlatents.pkl to copy beside them (e.g. `train`'s) [default: none].")
@user_errors
def export_tf(weights, out_dir, dlatents_path):
    """Write PyTorch weights back as a TF release in the authors' layout (the notebook loads it).

    The mapping rules are undone and each model is saved from its TF reference model; the
    round trip is exact. Then `convert --tf-ckpt OUT` and `verify --tf-ckpt OUT --weights
    weights/OUT` check the exported release against the port."""
    import shutil

    import models_pt
    from crosscheck.export import export_model

    src = Path(existing(weights))
    manifest = models_pt.read_manifest(src)
    models_pt.check_release_hashes(src, manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(len(manifest["models"]), "exporting")
    for stem, entry in manifest["models"].items():
        path = export_model(src / entry["weights"], out / f"{stem}.savedmodel.zip")
        bar.update(1)
        log_line(f"wrote {path}")
    bar.close()
    if dlatents_path:
        from porting.atomic import atomic_path

        with atomic_path(out / DLATENTS_FILE) as tmp:
            shutil.copyfile(existing(dlatents_path), tmp)
        log_line(f"wrote {out / DLATENTS_FILE}")
    click.echo(f"exported {len(manifest['models'])} model(s) to {out}; check with\n"
               f"  python cli.py convert --tf-ckpt {out} --out weights/{out.name}\n"
               f"  python cli.py verify --tf-ckpt {out} --weights weights/{out.name}")


@main.command("export-onnx")
@click.option("--weights", required=True, type=click.Path(),
              help="A converted release folder (with manifest.json) or one .safetensors file.")
@click.option("--model", "models", multiple=True,
              type=click.Choice(KIND_NAMES),
              help="Export only these (repeatable) [default: every model there].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the .onnx files.")
@click.option("--size", type=int, default=None,
              help="Classifier input size, fixed in the file [default: the generator's resolution in a "
                   "release folder, else 256].")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Run each file in onnxruntime and judge it against the PyTorch module as verify judges a "
                   "port (its float32 error against a float64 run within 8x PyTorch's own).")
@click.option("--tf-ckpt", type=click.Path(), default=None,
              help="The release folder the weights came from: also compare each file with the TF SavedModel.")
@trust_graph_option(GRAPH_HELP)
@user_errors
def export_onnx(weights, models, out_dir, size, verify, tf_ckpt, trust_graph):
    """Export the ported models to ONNX (the generator as its synthesis, style vectors as inputs)."""
    from contextlib import nullcontext

    import models_pt
    from crosscheck.tf_side import notebook_runner
    from porting import kinds
    from porting.onnx_export import export, format_checks, verify_onnx
    from porting.readers import open_checkpoint

    src = existing(weights)
    loaded = models_pt.load(src)                 # a folder -> {stem: module} (from its manifest)
    if not isinstance(loaded, dict):
        loaded = {src.stem: loaded}
    gen_res = next((m.config["resolution"] for m in loaded.values() if m.kind == "generator"), None)
    clf_size = size or gen_res or 256
    if models:
        loaded = {stem: m for stem, m in loaded.items() if m.kind in models}
        if not loaded:
            raise click.BadParameter(f"{weights} holds none of {', '.join(models)}", param_hint="--model")
    checks = []
    for stem, module in loaded.items():
        model_size = clf_size if kinds.get(module.kind).onnx.size_fixed else None
        path = export(module, Path(out_dir) / f"{stem}.onnx", model_size)
        click.echo(f"wrote {path} (onnx.checker: ok)")
        if verify:
            tf_zip = existing(str(Path(tf_ckpt) / f"{stem}.savedmodel.zip")) if tf_ckpt else None
            with open_checkpoint(tf_zip, trust_graph=trust_graph) if tf_zip else nullcontext() as ck:
                tf_output = notebook_runner(module.kind, ck) if ck else None
                checks.append(verify_onnx(path, module, model_size, tf_output=tf_output))
    if checks:
        click.echo(format_checks(checks))
        if not all(c.passed for c in checks):
            sys.exit(EXIT_FAILED)


for _command in COMMANDS + TRAIN_COMMANDS:   # user-study, user-study-score, fid; train-classifier, train
    main.add_command(_command)

HELP_WIDTH = 100


def command_reference() -> str:
    """``docs/commands.md``: every command's ``--help`` as click prints it at 100 columns (a test
    keeps the page equal to this)."""
    parent = click.Context(main, info_name="cli.py", max_content_width=HELP_WIDTH, terminal_width=HELP_WIDTH,
                           **main.context_settings)
    out = ["# Command reference", "",
           "Every command's `--help`, generated by `python cli.py command-reference > docs/commands.md`",
           "(`parity_tests/test_docs.py` fails when this page and the command line differ). Bad input",
           "ends with one line on stderr and exit code 2; a failed verification with exit code 1.", "",
           "```", main.get_help(parent), "```", ""]
    for name in main.list_commands(parent):
        cmd = main.get_command(parent, name)
        if cmd is None or cmd.hidden:
            continue
        ctx = click.Context(cmd, info_name=name, parent=parent, max_content_width=HELP_WIDTH,
                            terminal_width=HELP_WIDTH)
        out += [f"## {name}", "", "```", cmd.get_help(ctx), "```", ""]
    return "\n".join(out)


@main.command("command-reference", hidden=True)
def command_reference_cmd():
    """Print docs/commands.md (every command's --help)."""
    click.echo(command_reference(), nl=False)


if __name__ == "__main__":
    main()
