"""bench/attfind_flops.py's count: the prefix and suffix of every style layer add up to one whole
image (synthesis and classifier, counted on its own), and the peak is derived from the CPU."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_prefix_and_suffix_add_up_to_one_image():
    torch = pytest.importorskip("torch")
    import attfind_flops as af

    g, classifier = af.release_models(32)
    w = torch.randn(1, 514)
    costs = af.layer_costs(g, classifier, w, batch=1)   # (batches share the skip's up-sampling of
                                                        # the prefix's RGB image: a few kFLOP less)
    with torch.no_grad():
        conv, rgb = g.style_vectors(w)
        whole = af.flops_of(lambda: classifier(g.synthesis(conv, rgb)))
    assert whole > 1e8 and len(costs) == len(g.space.sizes) == 7
    for c in costs:
        assert c.prefix + c.suffix == pytest.approx(whole, rel=1e-12), c.layer
    assert costs[0].prefix == 0 and all(a.prefix < b.prefix for a, b in zip(costs, costs[1:]))
    with torch.no_grad():
        clf = af.flops_of(lambda: classifier(torch.zeros(1, 3, 32, 32)))
    own = af.own_layer(costs, clf)
    assert all(x > 0 for x in own) and sum(own) == pytest.approx(costs[0].suffix - clf, rel=1e-12)
    s = af.summary(costs, clf)
    assert 0 < s["shared_pass_saving"] < 1 and min(c.per_evaluation for c in costs) < s["flops"] <= whole


def test_cpu_peak_names_its_parts():
    import attfind_flops as af

    peak, how = af.cpu_peak(2)
    if how.startswith("unknown"):
        pytest.skip(how)
    assert peak > 1e9 and "GHz" in how and "lanes" in how


def test_gpu_names_as_torch_spells_them():
    import attfind_flops as af

    assert af.gpu_model("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert af.gpu_model("NVIDIA H100 PCIe") == "H100 PCIe"
    assert af.gpu_model("NVIDIA H200") == "H200"
    assert af.gpu_model("NVIDIA A100-SXM4-80GB") == "A100"
    assert af.gpu_model("NVIDIA L4") == "L4"
    assert af.gpu_model("NVIDIA L40S") is None and af.gpu_model("Tesla T4") is None
