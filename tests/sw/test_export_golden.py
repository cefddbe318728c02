"""End to end on a tiny config: train all stages, export, golden model == QAT model, corruption refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from vitforge.hw.isa import Mem, Op, disassemble
from vitforge.sw.artifact import ArtifactError
from vitforge.sw.data import digits_canvas
from vitforge.sw.export import load_artifact, weight_words
from vitforge.sw.golden import GoldenModel
from vitforge.sw.latency import model_macs
from vitforge.sw.workflow import Target, evaluate_artifact, load_checkpoint, train_to_dir

REPORT_KEYS = {"float_dense_acc", "int8_pruned_acc", "gmacs_dense", "gmacs_pruned", "keep_rates", "selector_blocks"}


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_report_and_artifact(tiny_run):
    out, report = tiny_run
    assert REPORT_KEYS <= set(report)
    assert report == json.loads((out / "report.json").read_text())
    assert report["golden_equals_qat"] is True
    assert report["gmacs_pruned"] < report["gmacs_dense"]
    assert report["latency_ms_pruned_model"] < report["latency_ms_dense_model"]
    assert len(report["keep_rates"]) == len(report["selector_blocks"]) >= 1
    for name in ("acc_vs_gmacs.png", "acc_vs_latency.png", "keep_heatmap.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    manifest = json.loads((out / "artifact" / "manifest.json").read_text())
    assert manifest["hardware"]["preset"] == "demo"
    assert manifest["program"]["instructions"] > 10
    assert manifest["program"]["fits_imem"] is True
    # The LOAD table has one row per LOAD instruction, each naming a hashed image or the input.
    instrs = disassemble((out / "artifact" / "program.bin").read_bytes())
    table = json.loads((out / "artifact" / manifest["program"]["loads"]).read_text())
    assert [(r["mem"], r["addr"], r["count"]) for r in table["loads"]] == \
        [(Mem(i.mem).name.lower(), i.addr, i.count) for i in instrs if i.op == Op.LOAD]
    images = {f"program/{r['blob']}.bin" for r in table["loads"] if r["blob"] != table["input"]["blob"]}
    assert images <= set(manifest["blobs"])
    assert set(manifest["selectors"]) == {str(b) for b in report["selector_blocks"]}
    # No temporary directories are left beside the artifact.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_golden_equals_qat_eval_forward(tiny_run, tiny_cfg):
    TINY = tiny_cfg
    out, _ = tiny_run
    model = load_checkpoint(out / "checkpoints" / "qat.safetensors")
    im, _ = load_artifact(out / "artifact")
    x = digits_canvas(seed=0, train_copies=1, canvas=16).x_test[:48]
    with torch.no_grad():
        qat = torch.round(model(x).double() / model.head.out_scale).to(torch.int64)
    golden = GoldenModel(im).evaluate(x)
    assert torch.equal(qat, golden["logits"])
    assert golden["tokens"][0] == TINY.num_tokens and golden["tokens"][-1] < TINY.num_tokens


def test_eval_reproduces_report(tiny_run, capsys):
    import argparse

    from vitforge.sw import cli

    out, report = tiny_run
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--artifact", str(out / "artifact"), "--backend", "golden", "--json"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["top1"] == report["int8_pruned_acc"]
    assert printed["gmacs"] == report["gmacs_pruned"]


def test_export_cli_matches_training_export(tiny_run, tmp_path):
    import argparse

    from vitforge.sw import cli

    out, _ = tiny_run
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["export", "--checkpoint", str(out / "checkpoints" / "qat.safetensors"),
                              "--out", str(tmp_path / "art")])
    assert args.func(args) == 0
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "art", out / "artifact"))
    assert ours.pop("extra")["dataset"].get("limit") is None  # the CLI export records no evaluation subset
    theirs.pop("extra")
    assert ours == theirs
    for rel in ours["blobs"]:
        assert (tmp_path / "art" / rel).read_bytes() == (out / "artifact" / rel).read_bytes()


def test_same_seed_byte_identical(tiny_run, tmp_path, tiny_cfg, tiny_train):
    out, _ = tiny_run
    again = tmp_path / "again"
    train_to_dir(again, seed=0, target=Target(mac_reduction=0.3), tc=tiny_train, cfg=tiny_cfg, plots=False,
                 log=lambda s: None, eval_limit=96)
    assert _tree_digest(again / "artifact") == _tree_digest(out / "artifact")
    assert (again / "report.json").read_bytes() == (out / "report.json").read_bytes()
    for stage in ("dense", "pruned", "qat"):
        assert (again / "checkpoints" / f"{stage}.safetensors").read_bytes() == \
            (out / "checkpoints" / f"{stage}.safetensors").read_bytes()


@pytest.fixture
def art_copy(tiny_run, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(tiny_run[0] / "artifact", dst)
    return dst


def _a_blob(art):
    manifest = json.loads((art / "manifest.json").read_text())
    return art / sorted(manifest["blobs"])[0], manifest


def test_refuses_hash_mismatch(art_copy):
    blob, _ = _a_blob(art_copy)
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{blob.name}.*SHA-256"):
        load_artifact(art_copy)


def test_refuses_truncated_blob(art_copy):
    blob, _ = _a_blob(art_copy)
    blob.write_bytes(blob.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match=f"{blob.name}.*truncated"):
        load_artifact(art_copy)


def test_refuses_missing_blob(art_copy):
    blob, _ = _a_blob(art_copy)
    blob.unlink()
    with pytest.raises(ArtifactError, match=f"{blob.name}.*missing"):
        load_artifact(art_copy)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("embed_dim", 128, "embed_dim 128 > max_embed_dim"),
    ("image_size", 64, "tokens > max_tokens"),
])
def test_refuses_model_not_fitting_preset(art_copy, field, value, match):
    path = art_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["model"][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"manifest.json.*{match}"):
        load_artifact(art_copy)


def test_golden_counts_dense_macs_like_the_formula(tiny_run, tiny_cfg):
    TINY = tiny_cfg
    out, _ = tiny_run
    im, _ = load_artifact(out / "artifact")
    im.thresholds = {b: 0 for b in im.thresholds}  # threshold 0 keeps every token: no package token
    g = GoldenModel(im)
    _, macs, tokens = g.run(torch.zeros(1, 16, 16))
    assert tokens == [TINY.num_tokens] * TINY.depth
    dense = TINY.with_selectors((), ())
    from vitforge.sw.latency import selector_macs

    expect = model_macs(dense) + sum(selector_macs(TINY, TINY.num_tokens) for _ in im.thresholds)
    assert macs == expect


def test_weight_words_layout():
    from vitforge.hw.config import get_preset

    hw = get_preset("demo")
    w = torch.tensor([[1, -1, 2, 3, 4, 5]])  # one row of 6 > lanes=4: two words, the second padded
    words = weight_words(w, hw)
    assert words == [0x0302FF01, 0x0504]


def test_evaluate_artifact_limit(tiny_run):
    out, _ = tiny_run
    res = evaluate_artifact(out / "artifact", limit=5)
    assert res["images"] == 5 and res["logits"].shape == (5, 10)
    assert evaluate_artifact(out / "artifact")["images"] == 96  # the count recorded at training


def test_layernorm_param_words_layout():
    from vitforge.hw.config import get_preset
    from vitforge.sw.export import layernorm_param_words

    hw = get_preset("demo")
    entry = {"gamma": torch.tensor([1, -2, 3, 4]), "beta": torch.tensor([-1, 0, 5, 6]), "eps_q": 7, "mult": 9,
             "shift": 3}
    words = layernorm_param_words(entry, hw)
    lane = 32 + 16 + 6
    assert len(words) == 2
    assert (words[0] >> lane) & 0xFFFFFFFF == 0 and (words[0] >> (lane + 32)) & 0xFFFF == 0xFE  # beta 0, gamma -2
    assert words[0] & 0xFFFFFFFF == 0xFFFFFFFF  # beta -1, two's complement
    assert words[1] == 7 | (9 << 32) | (3 << 48)


def test_golden_says_which_selectors_pruned():
    """``GoldenModel.pruned``: per selector, whether it dropped a token; a selector that drops exactly
    one leaves the count unchanged (its package token takes the place), so counts cannot tell."""
    from vitforge.quant import selector as qsel
    from vitforge.sw import random_model
    from vitforge.sw.vit import ViTConfig

    vit = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=3, num_heads=2,
                    mlp_ratio=2.0, selector_blocks=(1, 2), keep_rates=(0.5, 0.25))
    image = random_model.random_image(5, vit)
    seen = set()
    for threshold in (0, 40, 64, 90, 127):
        golden = GoldenModel(random_model.random_int_model(5, threshold, vit))
        _, _, tokens = golden.run(image)
        assert len(golden.pruned) == 2
        before = [vit.num_tokens, tokens[1]]
        for s, b in enumerate((1, 2)):
            if not golden.pruned[s]:
                assert tokens[b] == before[s]
            seen.add(golden.pruned[s])
    assert seen == {True, False}
    # Exactly one token pruned: the package token keeps the count.
    x = torch.randint(-128, 128, (5, 8))
    kept, keep, _ = qsel.select_tokens(x, torch.tensor([[127], [127], [127], [0], [127]]), torch.full((5, 1), 255), 64)
    assert int((~keep.bool()).sum()) == 1 and kept.shape[0] == 5
