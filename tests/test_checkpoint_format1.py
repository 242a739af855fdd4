"""A checkpoint written before the RunSpec redesign (format 1: no format_version, no
optimizer or problem in its settings) still resumes, bit for bit; a newer format is
refused with a message naming the version."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from compare import assert_same_results

import fastneuron
from fastneuron import engine

RUN = dict(seeds=[0, 1, 2**64 - 1, 5, 6], lrs=[0.01, 0.5, 0.02, 2.0, 0.03], steps=40, batch_size=2,
           log_every=5, member_block=2, momentum=[0.0, 0.9, 0.5, 0.0, 0.9], weight_decay=1e-3,
           backend="eager", progress=False)


def _mid_checkpoint(tmp_path, monkeypatch):
    real = engine.save_checkpoint
    kept = tmp_path / "mid.ckpt"

    def spy(path, spec, **k):
        real(path, spec, **k)
        if k["block_start"] == 2 and k["step"] == 20 and not kept.exists():
            shutil.copyfile(path, kept)

    monkeypatch.setattr(engine, "save_checkpoint", spy)
    fastneuron.train(**RUN, checkpoint=tmp_path / "live.ckpt", checkpoint_every=0)
    monkeypatch.undo()
    assert kept.exists()
    return kept


def _rewrite_meta(path, edit) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_format_1_checkpoint_resumes(tmp_path, monkeypatch):
    ref = fastneuron.train(**RUN)
    mid = _mid_checkpoint(tmp_path, monkeypatch)

    def to_format_1(meta):
        del meta["format_version"]
        del meta["settings"]["optimizer"], meta["settings"]["problem"]

    _rewrite_meta(mid, to_format_1)
    assert_same_results(ref, fastneuron.train(**RUN, resume=mid))


def test_newer_format_is_refused(tmp_path, monkeypatch):
    mid = _mid_checkpoint(tmp_path, monkeypatch)
    _rewrite_meta(mid, lambda meta: meta.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99"):
        fastneuron.train(**RUN, resume=mid)
