"""The base install (torch, numpy, safetensors) is enough to use converted weights: the README's
snippet, verbatim, in a fresh virtual environment, on a converted reference release. torch (and
what it requires) is linked into that environment from this one rather than unpacked again; pip
installs the rest, and the project's declared base requirements are checked by name."""
from __future__ import annotations

import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "models_pt", "models_tf", "porting",
           "attfind", "crosscheck", "stylex_port")
# Only the base install's distributions (and what torch itself pulls in) may be importable.
NOT_BASE = ("tensorflow", "tf_keras", "click", "tqdm", "ray", "onnx", "onnxruntime", "matplotlib", "PIL",
            "h5py", "requests", "pytest")


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In your own code", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "README's 'In your own code' has no python block"
    return found.group(1)


def test_the_snippet_is_python_that_uses_the_demos_paths():
    code = readme_snippet()
    compile(code, "README.md", "exec")
    assert '"weights/reference"' in code and '"reference/dlatents.pkl"' in code
    assert "torch.no_grad()" in code


BASE_REQUIREMENTS = {"torch", "numpy", "safetensors"}


def _closure(name: str) -> dict:
    """The installed distribution ``name`` and every distribution it requires (no extras), by
    normalised name."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found, todo = {}, [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in found:
            continue
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _link_torch(into: Path) -> Path:
    """A folder of links to the installed torch and the distributions torch itself requires (their
    packages and dist-info): a ``.pth`` puts it on the fresh venv's path, so pip finds torch
    installed instead of unpacking 900 MB again (40 of this fixture's 50 s). Nothing else of this
    environment is linked: numpy and safetensors are pip's to install (and setuptools, which the
    fresh venv holds in a version older than torch requires), TensorFlow is absent. A namespace
    folder (a CUDA build's ``nvidia/``) is linked whole."""
    into.mkdir()
    for dist in _closure("torch").values():
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)
    assert (into / "torch" / "__init__.py").exists(), f"torch's files are not listed where it is installed: {into}"
    return into


@pytest.fixture(scope="module")
def base_env(tmp_path_factory) -> Path:
    """A fresh venv with ``pip install <project>`` and no extras (from a copy of the sources, so
    the build leaves nothing in the checkout); torch comes linked (``_link_torch``), and the
    project's own base requirements are checked to be exactly torch, numpy and safetensors."""
    tmp = tmp_path_factory.mktemp("base")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(p, src / name)
    env = tmp / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_torch_linked.pth").write_text(f"{_link_torch(tmp / 'torch')}\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    declared = subprocess.run([str(python), "-c", "import importlib.metadata as m; print('\\n'.join(m.requires("
                               "'stylex-port') or []))"], capture_output=True, text=True, check=True).stdout
    from packaging.requirements import Requirement

    base = {Requirement(line).name for line in declared.splitlines()
            if line and "extra ==" not in (str(Requirement(line).marker or ""))}
    assert base == BASE_REQUIREMENTS, f"the base install requires {sorted(base)}"
    return python


@pytest.mark.slow
def test_the_readme_snippet_runs_on_the_base_install(base_env, attfind_release, tmp_path):
    ref, weights = attfind_release
    (tmp_path / "weights").mkdir()
    shutil.copytree(weights, tmp_path / "weights" / "reference")
    (tmp_path / "reference").mkdir()
    shutil.copy(ref / "dlatents.pkl", tmp_path / "reference" / "dlatents.pkl")
    check = ("\nimport sys\nleaked = sorted(m for m in %r if m in sys.modules)\n"
             "assert not leaked, f'the snippet imported {leaked}'\nprint('SNIPPET-OK', probs.shape, w_own.shape)\n"
             % (NOT_BASE,))
    (tmp_path / "snippet.py").write_text(readme_snippet() + check)
    run = subprocess.run([str(base_env), "snippet.py"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "SNIPPET-OK torch.Size([4, 2]) torch.Size([4, 514])" in run.stdout, run.stdout

    # What the base install holds: the packages, nothing generic at the top of site-packages,
    # and none of the extras.
    listing = subprocess.run([str(base_env), "-c", "import site, os; d = site.getsitepackages()[0]; "
                              "print('\\n'.join(sorted(os.listdir(d))))"], capture_output=True, text=True).stdout.split()
    assert {"models_pt", "porting", "stylex_port"} <= set(listing)
    assert not {"cli.py", "release_facts.py"} & set(listing), listing
    missing = subprocess.run([str(base_env), "-c", "import tensorflow"], capture_output=True, text=True)
    assert missing.returncode != 0 and "No module named 'tensorflow'" in missing.stderr


@pytest.mark.slow
def test_a_corrupted_file_is_refused_on_the_base_install(base_env, attfind_release, tmp_path):
    """One byte flipped inside a converted tensor: load names the file; check_hashes=False loads it."""
    _, weights = attfind_release
    folder = tmp_path / "weights"
    shutil.copytree(weights, folder)
    target = folder / "mobilenet.safetensors"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x01                         # inside the last tensor's bytes, past the header
    target.write_bytes(bytes(data))
    code = ("import models_pt\ntry:\n    models_pt.load(%r)\nexcept models_pt.WeightsError as e:\n    print('REFUSED', e)\n"
            "m = models_pt.load(%r, check_hashes=False)\nprint('LOADED', sorted(m))\n" % (str(folder), str(folder)))
    run = subprocess.run([str(base_env), "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    refused = [line for line in run.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 1 and "mobilenet.safetensors: sha256" in refused[0] and "manifest.json" in refused[0], run.stdout
    assert "LOADED ['discriminator', 'encoder', 'generator', 'mobilenet']" in run.stdout
