"""The documented training commands end to end on a few real photos: cache -> ISCN (save, resume, init) -> MRN ->
assemble -> a checkpoint the engine loads. Tiny budgets: this checks the plumbing, not what the model learns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "ccp-fashion" / "manifest.json").is_file(),
                       reason=f"needs the real training sets (ccp-fashion and the others) in {DATA}, beside the clone"),
]


def run_train(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "backend.train", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def train(*args: str | Path) -> str:
    run = run_train(*args)
    assert run.returncode == 0, f"{args[0]} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    return run.stdout


def iscn_weights(path: Path) -> dict[str, torch.Tensor]:
    from backend.dfimat.model import load_checkpoint

    model, _ = load_checkpoint(path)
    return {k: v.clone() for k, v in model.iscn.state_dict().items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    out = train("cache", "--data", DATA, "--synth", root / "no-synth", "--limit", 4, "--collages", 2,
                "--out", root / "cache")
    assert "cache 6/6" in out  # 4 photos + 2 collages
    train("iscn", "--cache", root / "cache", "--steps", 2, "--batch", 2, "--save-every", 1, "--out", root / "iscn")
    return root


def test_iscn_resumes_where_it_stopped(runs):
    out = train("iscn", "--cache", runs / "cache", "--steps", 3, "--batch", 2, "--out", runs / "iscn", "--resume")
    assert "resumed at step 2" in out and "saved step 3 (final)" in out
    log = (runs / "iscn" / "train.log").read_text()
    # One log per run folder: the resumed run appends to the first run's lines.
    assert log.count("ISCN trainable parameters") == 2 and log.index("saved step 2") < log.index("resumed at step 2")


def test_iscn_init_starts_from_the_given_weights(runs):
    train("iscn", "--cache", runs / "cache", "--steps", 0, "--init", runs / "iscn" / "dfimat-s-iscn.pt",
          "--out", runs / "init")
    source, started = iscn_weights(runs / "iscn" / "dfimat-s-iscn.pt"), iscn_weights(runs / "init" / "dfimat-s-iscn.pt")
    assert source.keys() == started.keys()
    assert all(torch.equal(source[k], started[k]) for k in source)


def test_iscn_train_only_changes_the_named_parts_under_the_keep_weight(runs):
    out = train("iscn", "--cache", runs / "cache", "--steps", 2, "--batch", 2, "--init", runs / "iscn" / "dfimat-s-iscn.pt",
                "--train-only", "conflict,sampler", "--keep-weight", 2, "--keep-from-iou", 0.5, "--earlier-rounds", 1,
                "--out", runs / "keep")
    assert "frozen: pixel_decoder, dense_encoder, decoder" in out
    source, trained = iscn_weights(runs / "iscn" / "dfimat-s-iscn.pt"), iscn_weights(runs / "keep" / "dfimat-s-iscn.pt")
    changed = {k.split(".")[0] for k in source if not torch.equal(source[k], trained[k])}
    assert changed == {"conflict", "sampler"}


def test_mosaic_cache_and_loose_box_training_run(runs):
    out = train("cache", "--data", DATA, "--synth", runs / "no-synth", "--limit", 4, "--collages", 0,
                "--mosaics", 2, "--mosaics-only", "--out", runs / "mosaic")
    assert "cache 2/2" in out  # the 4 photos only feed the 2 mosaics
    from backend.train.cache import open_cache

    cache = open_cache(runs / "mosaic")
    assert [e["set"] for e in cache["meta"]["entries"]] == ["mosaic", "mosaic"]
    assert all(e["targets"] >= 1 for e in cache["meta"]["entries"])
    out = train("iscn", "--cache", runs / "cache", runs / "mosaic", "--steps", 1, "--batch", 2, "--loose-boxes", "1",
                "--earlier-rounds", "3", "--log-every", 1, "--out", runs / "loose")
    assert "saved step 1 (final)" in out and "rounds 4.000" in out  # three corrective rounds, then the trained one
    bad = run_train("iscn", "--cache", runs / "cache", "--earlier-rounds", "1,-2", "--out", runs / "bad")
    assert bad.returncode != 0 and "round counts must be >= 0" in bad.stderr


def test_mrn_and_assemble_give_a_checkpoint_the_engine_runs(runs):
    from backend.runtime.engine import Engine

    train("mrn", "--data", DATA, "--iscn", runs / "iscn" / "dfimat-s-iscn.pt", "--iscn-cache", runs / "cache",
          "--crops", runs / "crops", "--limit", 2, "--steps", 2, "--batch", 2, "--out", runs / "mrn")
    assert "PSEUDO alpha" in (runs / "mrn" / "train.log").read_text()
    final = runs / "final.pt"
    train("assemble", "--iscn", runs / "iscn" / "dfimat-s-iscn.pt", "--mrn", runs / "mrn" / "dfimat-s.pt",
          "--out", final)
    engine = Engine.load(device="cpu", weights=final)
    image = np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    sid = engine.open(image)
    alpha = engine.predict(sid, {"box": [10, 10, 60, 80]})
    assert alpha.shape == (90, 70) and alpha.dtype == np.float32
    assert 0.0 <= float(alpha.min()) and float(alpha.max()) <= 1.0
    # A changed ISCN can keep an earlier query selector; a checkpoint without one is refused as its source.
    from backend.dfimat.model import load_checkpoint

    committed = REPO / "models" / "dfimat-s" / "dfimat-s.pt"
    train("assemble", "--iscn", runs / "iscn" / "dfimat-s-iscn.pt", "--mrn", runs / "mrn" / "dfimat-s.pt",
          "--selector", committed, "--out", runs / "with-selector.pt")
    model, _ = load_checkpoint(runs / "with-selector.pt")
    source, _ = load_checkpoint(committed)
    assert all(torch.equal(a, b) for a, b in zip(model.selector.state_dict().values(),
                                                 source.selector.state_dict().values(), strict=True))
    run = run_train("assemble", "--iscn", runs / "iscn" / "dfimat-s-iscn.pt", "--mrn", runs / "mrn" / "dfimat-s.pt",
                    "--selector", final, "--out", runs / "refused.pt")
    assert run.returncode != 0 and "no query selector" in run.stderr + run.stdout


def test_mrn_fine_tuning_starts_from_the_checkpoint_and_records_its_inputs(runs):
    from backend.dfimat.model import load_checkpoint

    committed = REPO / "models" / "dfimat-s" / "dfimat-s.pt"
    out = runs / "mrn-ft"
    # lr 0: the parameters must still be the committed MRN's, which they are only if --init-mrn loaded them.
    log = train("mrn", "--data", DATA, "--iscn", committed, "--iscn-cache", runs / "cache", "--crops", runs / "crops-ft",
                "--limit", 2, "--steps", 2, "--batch", 2, "--lr", 0, "--init-mrn", "--pose-priors", "--min-scale", 0.5,
                "--out", out)
    before, _ = load_checkpoint(committed)
    after, meta = load_checkpoint(out / "dfimat-s.pt")
    a, b = dict(before.mrn.named_parameters()), dict(after.mrn.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The committed checkpoint's MRN record described the MRN this run replaced: it must not survive.
    assert meta["mrn"]["mrn_steps"] == 2 and meta["mrn"]["mrn_init"] == str(committed)
    assert meta["mrn"]["mrn_inputs"] == {"pose_priors": "pose priors for" in log, "min_scale": 0.5}
    assert "mrn_steps" not in meta
    if "pose priors for" in log:
        priors = np.load(runs / "crops-ft" / "pose.npy")
        assert priors.shape[0] == 2 and np.isfinite(priors.astype(np.float32)).any()


def test_training_refuses_the_held_out_sets(tmp_path):
    run = run_train("cache", "--data", tmp_path / "none", "--synth", DATA, "--out", tmp_path / "c")
    assert run.returncode != 0 and "held-out" in (run.stdout + run.stderr)


def test_selector_stage_keeps_the_networks_and_adds_a_selector(runs):
    from backend.dfimat.model import load_checkpoint
    from backend.runtime.engine import Engine

    init = REPO / "models" / "dfimat-s" / "dfimat-s.pt"
    out = runs / "selector"
    log = train("selector", "--init", init, "--cache", runs / "cache", "--samples", 8, "--batch", 4,
                "--steps", 5, "--rounds", 2, "--out", out)
    assert "fitted rows" in log and (out / "selector_samples_r2.npz").is_file()
    before, _ = load_checkpoint(init)
    after, meta = load_checkpoint(out / "dfimat-s.pt")
    assert after.selector is not None and meta["selector"]["samples"] == 16  # 8 per round
    for part in ("iscn", "mrn"):
        a, b = getattr(before, part).state_dict(), getattr(after, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    engine = Engine.load(device="cpu", weights=out / "dfimat-s.pt", runtime="torch")
    image = np.random.default_rng(1).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    alpha = engine.predict(engine.open(image), {"clicks": [[30, 40, True]]})
    assert alpha.shape == (90, 70)
