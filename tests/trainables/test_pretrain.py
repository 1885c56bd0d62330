"""Pretraining of the tiny stand-ins: deterministic rebuilds, the shipped weights and manifest."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model, save_model

from trainables import defaults
from trainables.config import TrialConfig
from trainables.presets import build_model
from trainables.pretrain import lr_at_step, main, pretrain, rebuild_command
from trainables.pretrain_corpus import OBJECTIVES, corpus_hash, downstream_image_hashes, make_corpus
from trainables.pretrain_report import SOURCES, scored_inputs_sha256, sort_safetensors_metadata, sources_sha256_at
from trainables.pretrained import (
    PRETRAINED_DIR,
    SHIPPED_PRESETS,
    file_sha256,
    load_shipped,
    read_manifest,
    verified_weights,
    weights_path,
)
from trainables.vocab import SYNTH_BENCHMARKS

SHORT = dataclasses.replace(defaults.PRETRAIN, train_items=40, heldout_items=8, epochs=2, batch_size=16,
                            warmup_steps=2, num_threads=1)


@pytest.mark.parametrize("preset", SHIPPED_PRESETS)
def test_a_short_pretraining_run_rebuilds_exactly(preset):
    a = pretrain(preset, 3, SHORT, log=lambda _: None)
    b = pretrain(preset, 3, SHORT, log=lambda _: None)
    c = pretrain(preset, 4, SHORT, log=lambda _: None)
    assert a.steps == b.steps == 2 * (2 + 1)  # per epoch: ceil(n_caption/16) + ceil(n_vqa/16)
    assert a.train_loss == b.train_loss and a.heldout_loss == b.heldout_loss
    assert a.corpus_sha256 == b.corpus_sha256 != c.corpus_sha256
    assert a.train_loss != c.train_loss
    sa, sb = a.bundle.model.state_dict(), b.bundle.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert set(a.train_loss) == set(a.heldout_loss) == set(OBJECTIVES)
    # it learns: the last epoch's loss is below the first's for every objective
    assert all(a.train_loss[o][-1] < a.train_loss[o][0] for o in OBJECTIVES)


def test_cli_writes_weights_and_a_manifest_that_loads(tmp_path, capsys):
    argv = ["--preset", "tiny-llama", "--out", str(tmp_path), "--seed", "5"]
    for f in dataclasses.fields(SHORT):
        argv += ["--" + f.name.replace("_", "-"), str(getattr(SHORT, f.name))]
    assert main(argv) == 0
    manifest = read_manifest("tiny-llama", tmp_path)
    assert manifest["command"] == rebuild_command("tiny-llama", 5, SHORT)
    assert manifest["weights_sha256"] == file_sha256(weights_path("tiny-llama", tmp_path))
    model = build_model("tiny-llama", init="random", seed=99).model
    load_shipped(model, "tiny-llama", tmp_path)
    assert "zero-shot test accuracy" in capsys.readouterr().out


def test_the_weights_file_depends_only_on_the_tensors(tmp_path):
    """safetensors writes its metadata (here tiny-t5's tied-weight aliases) in a random order per
    call; sorted, the same tensors always give the same bytes, so a rebuild reproduces the hash."""
    model = build_model("tiny-t5", init="random", seed=1).model
    digests = set()
    for i in range(4):
        path = tmp_path / f"{i}.safetensors"
        save_model(model, str(path), metadata={"seed": "1", "preset": "tiny-t5"})
        sort_safetensors_metadata(path)
        digests.add(file_sha256(path))
    assert len(digests) == 1
    raw = path.read_bytes()
    meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    assert list(meta) == sorted(meta) and len(meta) == 5  # preset, seed + 3 tied aliases
    loaded = build_model("tiny-t5", init="random", seed=2).model
    load_model(loaded, str(path), strict=True)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("preset", SHIPPED_PRESETS)
def test_shipped_weights_match_their_manifest_and_load_by_default(preset):
    manifest = read_manifest(preset)
    assert file_sha256(verified_weights(preset)) == manifest["weights_sha256"]
    for key in ("seed", "steps", "command", "code_version", "corpus", "final_losses", "zero_shot"):
        assert key in manifest, key
    assert set(manifest["final_losses"]["heldout"]) == set(OBJECTIVES)
    assert manifest["command"].startswith(f"python -m trainables.pretrain --preset {preset} ")
    assert set(manifest["zero_shot"]) == set(SYNTH_BENCHMARKS)
    default, random = build_model(preset).model.state_dict(), build_model(preset, init="random").model.state_dict()
    shipped = build_model(preset, init="random").model
    load_shipped(shipped, preset)
    assert all(torch.equal(default[k], v) for k, v in shipped.state_dict().items())
    assert not torch.equal(default["query_tokens"], random["query_tokens"])


@pytest.mark.parametrize("preset", SHIPPED_PRESETS)
def test_manifest_zero_shot_was_scored_on_todays_benchmarks(preset):
    """The summary prints the manifest's zero-shot numbers: they must be about the inputs a trial
    scores today (same problems, same tokens), else the weights need rebuilding."""
    from trainables.loop import build_trial

    for benchmark, recorded in read_manifest(preset)["zero_shot"].items():
        trial = build_trial(TrialConfig(method="baseline", llm=preset, benchmark=benchmark), splits=("val", "test"))
        assert recorded["inputs_sha256"] == scored_inputs_sha256(trial), (
            f"{benchmark} changed since {preset} was pretrained; rebuild: {read_manifest(preset)['command']}")
        assert recorded["chance_test"] < recorded["test"] + 1  # a number, and a probability
        assert 0 <= recorded["test"] <= 1


def test_stale_or_corrupt_weights_fail_loudly(tmp_path):
    for name in ("tiny-t5.safetensors", "tiny-t5.json"):
        shutil.copy(PRETRAINED_DIR / name, tmp_path / name)
    data = bytearray((tmp_path / "tiny-t5.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "tiny-t5.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="stale or corrupted.*python -m trainables.pretrain"):
        verified_weights("tiny-t5", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m trainables.pretrain --preset tiny-llama"):
        read_manifest("tiny-llama", tmp_path)
    (tmp_path / "tiny-t5.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest("tiny-t5", tmp_path)


def test_init_is_a_trial_option_and_random_stays_available():
    assert TrialConfig(method="baseline").init == "pretrained"
    assert TrialConfig(method="baseline", llm="small-t5").init == "random"
    assert TrialConfig.from_dict({"method": "baseline", "init": "random"}).init == "random"
    with pytest.raises(ValueError, match="unknown init 'scratch'"):
        TrialConfig(method="baseline", init="scratch")
    with pytest.raises(ValueError, match="no pretrained weights ship for preset 'small-t5'"):
        build_model("small-t5", init="pretrained")


def test_corpus_is_deterministic_and_disjoint_from_the_benchmarks():
    exclude = downstream_image_hashes(defaults.SYNTH_SEED, defaults.SYNTH_SPLIT_SIZES)
    items = make_corpus(0, 3000, 0.3, exclude)
    assert items == make_corpus(0, 3000, 0.3, exclude)
    assert not exclude & {hashlib.sha256(it.png).hexdigest() for it in items}
    # the excluded set really bites: without it some corpus images equal benchmark images
    assert exclude & {hashlib.sha256(it.png).hexdigest() for it in make_corpus(0, 3000, 0.3, frozenset())}
    panels = 0
    for it in items:  # no lettered multiple choice, no downstream template
        assert "(" not in it.prompt and "Options:" not in it.prompt and "Answer:" not in it.prompt
        if it.target.startswith("("):  # a figure-panel caption: the letter is the one the prompt names
            assert it.objective == "caption" and f"panel {it.target[1]} " in it.prompt
            panels += 1
    assert 0.1 < panels / len(items) < 0.2  # half of the 30% captions
    assert {it.objective for it in items} == set(OBJECTIVES)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    r = dataclasses.replace(SHORT, lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at_step(r, s, 20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_manifest_is_json_with_the_exact_rebuild_command():
    for preset in SHIPPED_PRESETS:
        text = (PRETRAINED_DIR / f"{preset}.json").read_text()
        assert json.loads(text)["preset"] == preset


def _git_history(root: Path) -> bool:
    """True in a full git checkout (a tarball or a shallow clone cannot check a recorded commit)."""
    try:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return shallow == "false"


@pytest.mark.parametrize("preset", SHIPPED_PRESETS)
def test_manifest_names_the_code_and_recipe_that_rebuild_it(preset):
    """The manifest's command is what today's defaults run, and its code version names a commit
    of this history whose hashed sources are the recorded hash (a squashed-away commit fails)."""
    manifest = read_manifest(preset)
    assert manifest["seed"] == defaults.PRETRAIN_SEED
    assert manifest["recipe"] == dataclasses.asdict(defaults.PRETRAIN)
    assert manifest["command"] == rebuild_command(preset, defaults.PRETRAIN_SEED, defaults.PRETRAIN)
    version = manifest["code_version"]
    assert version["sources"] == list(SOURCES) and version["sources_dirty"] is False
    root = Path(__file__).resolve().parents[2]
    if not _git_history(root):
        pytest.skip("not a full git checkout: the recorded commit cannot be looked up")
    assert sources_sha256_at(version["git_commit"], version["sources"], root) == version["sources_sha256"]


def test_manifest_corpus_is_the_corpus_todays_code_draws():
    """Both presets are pretrained on one corpus (same seed and recipe); a change to the synthetic
    world or the corpus templates shows here, in seconds, instead of in a 15-minute rebuild."""
    recipe = defaults.PRETRAIN
    exclude = downstream_image_hashes(defaults.SYNTH_SEED, defaults.SYNTH_SPLIT_SIZES)
    items = make_corpus(defaults.PRETRAIN_SEED, recipe.train_items + recipe.heldout_items, recipe.caption_share,
                        exclude)
    digest = corpus_hash(items)
    for preset in SHIPPED_PRESETS:
        corpus = read_manifest(preset)["corpus"]
        assert corpus["sha256"] == digest, f"the corpus changed since {preset} was pretrained"
        assert corpus["downstream_images_excluded"] == len(exclude)
