"""The Triton kernel's instruction budget on sm_90 (H200), compiled here without a GPU
(``fastneuron.kernels.sass``): SPEC §3's no-FMA rule in the machine code, no local
memory in the main loop, registers within 64 (8 blocks of 128 threads per SM).

The session runs with TRITON_INTERPRET=1 (conftest), so the module compiles in child
processes without it; the variants compile once per session (about 10-20 s cold).
"""

import json

import pytest

from fastneuron.kernels import sass

pytestmark = pytest.mark.skipif(
    not sass.tools_available(),
    reason="needs triton with its bundled ptxas, cuobjdump and nvdisasm (triton/backends/nvidia/bin)")

MAX_REGS = 64
#: The issue's instruction budgets per neuron-step (issue 11): base <= 34 (about 1e12
#: neuron-steps/s issue-bound on an H200), momentum <= 45.
BUDGET = {"base": 34, "momentum": 45}
#: With enable_fp_fusion=True: the negative control (normal+noise: the Box–Muller normals,
#: whose division and square root FFMAs are recognized, must not hide contracted ones).
FUSED = [("base", {}), ("batch3", {"BATCH": 3}), ("normal+noise", {"NORMAL": True, "NOISE": True})]


def _box_muller(r) -> bool:
    """Whether the variant draws normals (NOISE or NORMAL: tl.math.div_rn and sqrt_rn)."""
    return bool(r["constexprs"].get("NOISE") or r["constexprs"].get("NORMAL"))


@pytest.fixture(scope="module")
def rows():
    specs = [(cx, None) for cx in sass.VARIANTS.values()] + [(cx, True) for _, cx in FUSED]
    compiled = sass.compile_variants(specs)  # all at once: one child per core
    return {name: sass.analyze(v) for name, v in zip(list(sass.VARIANTS) + [f"fused {n}" for n, _ in FUSED],
                                                      compiled)}


@pytest.mark.parametrize("name", list(sass.VARIANTS))
def test_no_ffma_outside_division(rows, name):
    r = rows[name]
    assert r["ffma_outside_division"] == 0, f"{name}: {r['ffma_kernel']} FFMA, {r['ffma_division_kernel']} in division"
    if r["constexprs"]["BATCH"] == 1 and not _box_muller(r):
        assert r["ffma_kernel"] == 0  # no IEEE division or square root at all
    if _box_muller(r):  # the normals' div_rn and sqrt_rn: their Newton steps, and slow-path calls
        assert r["ffma_division_kernel"] > 0 and r["slow_path_calls_in_loop"] > 0


@pytest.mark.parametrize("name", list(sass.VARIANTS))
def test_loop_has_no_local_memory_and_is_the_group_loop(rows, name):
    r = rows[name]
    assert r["local_memory_in_loop"] == 0 and r["n_spills"] == 0
    # Two divergence checks (|w|, |b| against FLT_MAX) per neuron-step: the loop found is
    # the loop over groups, and the per-step divisor is right.
    assert r["divergence_checks_in_loop"] == 2 * r["neuron_steps_per_iteration"]
    assert r["instructions_per_neuron_step"] > 0
    # the slow-path call blocks: two div.rn a step for the batch mean (B > 1), and per sample
    # one for each Box–Muller stream (NORMAL's x, NOISE's eps: a div.rn and a sqrt.rn a pair)
    cx = r["constexprs"]
    per_step = (2 if cx["BATCH"] > 1 else 0) + cx["BATCH"] * (int(cx["NOISE"]) + int(cx["NORMAL"]))
    assert r["slow_path_calls_in_loop"] == per_step * r["neuron_steps_per_iteration"]


@pytest.mark.parametrize("name", list(sass.VARIANTS))
def test_registers(rows, name):
    """Every variant, B > 1 included (tl.math.div_rn, 69-72 registers unbounded), fits in
    64 registers (triton_sgd.MAX_REGISTERS, ptxas .maxnreg) without spilling: 8 blocks per SM."""
    r = rows[name]
    # (B > 1 under .maxnreg: the division slow path's CALL saves registers on a 16-byte
    # stack; the loop itself has no local memory, see the test above.)
    assert r["n_regs"] <= MAX_REGS and r["n_spills"] == 0 and r["stack_bytes"] <= 16
    assert r["blocks_per_sm"] >= 8


@pytest.mark.parametrize("name", list(BUDGET))
def test_instruction_budget(rows, name):
    assert rows[name]["instructions_per_neuron_step"] <= BUDGET[name]


@pytest.mark.parametrize("name", ["base", "batch3", "init"])
def test_philox_products_are_wide_multiplies(rows, name):
    """On CUDA, Philox's 32x32->64 products come from inline-PTX mul.wide.u32 (PTX_PHILOX),
    one IMAD.WIDE.U32 each (20 a block of four samples, 10 rounds x 2), not the separate
    IMAD.HI.U32 and IMAD of tl.philox's umulhi and mul (the interpreter's path)."""
    r = rows[name]
    ops = r["loop_opcodes"]
    blocks = r["neuron_steps_per_iteration"] * r["constexprs"]["BATCH"] // 4  # Philox blocks per thread
    assert ops.get("IMAD.HI.U32", 0) == 0
    # 18 a block in the loop: round 1's products of the loop-invariant s_lo and the
    # uniform block index are hoisted out or done once per warp (UIMAD.WIDE.U32).
    assert ops.get("IMAD.WIDE.U32", 0) >= 18 * blocks


def test_fusion_is_caught(rows):
    """The check is not vacuous: with FMA contraction on, FFMAs appear outside division,
    while those of the division are counted the same."""
    assert rows["fused base"]["ffma_outside_division"] > 0
    assert rows["fused batch3"]["ffma_outside_division"] > 0
    # Box–Muller: the polynomials and a*x + c + sigma*eps contract, the IEEE division's and
    # square root's FFMAs are recognized as many as without fusion, no more.
    assert rows["fused normal+noise"]["ffma_outside_division"] > 0
    assert rows["fused normal+noise"]["ffma_division_kernel"] == rows["normal+noise"]["ffma_division_kernel"] > 0
    # (The division FFMAs are found by following the divisor and its reciprocal through
    # registers, a heuristic: with fusion on, ptxas' different allocation lets it claim
    # more, 132 against 112 with triton 3.9 and .maxnreg 64, since a uniform divisor's
    # copies count from its load on.)
    assert rows["fused batch3"]["ffma_division_kernel"] >= rows["batch3"]["ffma_division_kernel"] > 0


def test_issue_bound_estimate(rows):
    # The issue's figures (the kernel before issue 11's levers): 41.5 instructions per
    # neuron-step -> about 8e11 neuron-steps/s.
    assert sass.issue_bound(41.5) == pytest.approx(132 * 128 * 1.98e9 / 41.5)
    assert sass.issue_bound(41.5) == pytest.approx(8.06e11, rel=1e-3)
    base = rows["base"]
    per_step = base["instructions_per_neuron_step"]
    assert base["issue_bound_neuron_steps_per_s"] == pytest.approx(sass.issue_bound(per_step))
    assert 25 < per_step < 60  # 33.1 with triton 3.9 (41.5 before the int32 divergence count and mul.wide)


def test_kernel_source_matches_the_module():
    """The kernel is compiled from triton_sgd.py's source: same constants, same signature."""
    from fastneuron.kernels import triton_sgd
    ns = sass.kernel_namespace()
    for name in ("BLOCK_SIZE", "BOX_MULLER_BLOCK_SIZE", "NUM_WARPS", "ENABLE_FP_FUSION", "MAX_UNROLLED_SAMPLES",
                 "MAX_REGISTERS"):
        assert ns[name] == getattr(triton_sgd, name)
    assert ns["PTX_PHILOX"]  # compiled for CUDA: the inline-PTX Philox (the tests interpret tl.philox)
    assert ns["sgd_kernel"].arg_names == triton_sgd.sgd_kernel.arg_names
    assert sass.launch_constexprs(BATCH=3)["GROUP"] == 4 and sass.launch_constexprs(BATCH=2)["GROUP"] == 2
    # the launcher's block size rule: one member a thread when the kernel draws normals
    for flags in ({}, {"NOISE": True}, {"NORMAL": True}, {"NOISE": True, "NORMAL": True}, {"SCHEDULE": True}):
        assert sass.launch_constexprs(**flags)["BLOCK"] == triton_sgd.launch_block_size(**flags)
    assert sass.launch_constexprs()["BLOCK"] == triton_sgd.BLOCK_SIZE
    assert sass.launch_constexprs(NOISE=True)["BLOCK"] == triton_sgd.BOX_MULLER_BLOCK_SIZE
    assert sass.launch_constexprs(NORMAL=True)["BLOCK"] == triton_sgd.BOX_MULLER_BLOCK_SIZE


def test_cli_writes_header_and_json(rows, tmp_path, capsys):
    path = tmp_path / "sass.json"
    assert sass.main(["--json", str(path), "--variant", "base"]) == 0
    text = capsys.readouterr().out
    data = json.loads(path.read_text())
    for key in ("date", "triton", "ptxas", "target", "commit"):
        assert data[key] and f"# {key}: {data[key]}" in text
    assert data["target"] == "GPUTarget('cuda', 90, 32)"
    assert [r["name"] for r in data["variants"]] == ["base"]
    assert "base" in text and f"{data['variants'][0]['instructions_per_neuron_step']:.2f}" in text


# ------------------------------------------------------------------ the Adam kernel

#: The Adam kernel's variants (triton_adam.adam_kernel: Adam, AdamW, RMSprop), and with
#: fusion on the negative control.
ADAM_FUSED = [("fused adam", {}), ("fused rmsprop all", {"OPTIMIZER": 2, "WEIGHT_DECAY": True, "CENTERED": True,
                                                         "MOMENTUM": True})]
#: Static SASS instructions per neuron-step, a regression guard at today's figures (triton
#: 3.9: adam 122.75, rmsprop 99.0), not the issue's target. Issue 12 asks for Triton Adam
#: <= 2.5x SGD's (base 33.1 -> 82.8); the kernel takes 3.71x (3.22x on the fast path, without
#: the slow-path call blocks): each of the four IEEE operations of a neuron-step (two sqrt.rn,
#: two div.rn, which SPEC §3c needs exactly) costs about 10 instructions on its fast path and
#: a call block besides. See bench/results/sass-adam-2026-11-30.txt.
ADAM_BUDGET = {"adam": 126, "rmsprop": 102}


@pytest.fixture(scope="module")
def adam_rows():
    specs = [(cx, None, "adam") for cx in sass.ADAM_VARIANTS.values()] + [(cx, True, "adam") for _, cx in ADAM_FUSED]
    compiled = sass.compile_variants(specs)
    return {name: sass.analyze(v) for name, v in zip(list(sass.ADAM_VARIANTS) + [n for n, _ in ADAM_FUSED], compiled)}


@pytest.mark.parametrize("name", list(sass.ADAM_VARIANTS))
def test_adam_no_fma_outside_division_and_sqrt(adam_rows, name):
    """SPEC §3c's float32 lines are separately rounded: the only FFMAs are those of IEEE
    division and square root (tl.math.div_rn, sqrt_rn), and the only float64 fmas are the
    four a step of the two Markstein corrections of lr / bc1 (none in RMSprop); no float64
    division call."""
    r = adam_rows[name]
    assert r["ffma_outside_division"] == 0, f"{name}: {r['ffma_kernel']} FFMA, {r['ffma_division_kernel']} in div/sqrt"
    steps = r["neuron_steps_per_iteration"]
    assert r["dfma_loop"] == (0 if r["constexprs"]["OPTIMIZER"] == 2 else 4 * steps)
    assert r["float64_division_calls"] == 0


@pytest.mark.parametrize("name", list(sass.ADAM_VARIANTS))
def test_adam_loop_has_no_local_memory_and_is_the_group_loop(adam_rows, name):
    r = adam_rows[name]
    assert r["local_memory_in_loop"] == 0 and r["n_spills"] == 0
    assert r["divergence_checks_in_loop"] == 2 * r["neuron_steps_per_iteration"]
    # two sqrt.rn and two div.rn a neuron-step, each with its slow path's call block (batch
    # > 1: two more div.rn for the batch mean); NOISE and NORMAL: each stream's Box–Muller,
    # one div.rn and one sqrt.rn per two samples, one call a sample
    cx = r["constexprs"]
    per_step = 4 + (2 if cx["BATCH"] > 1 else 0) + cx["BATCH"] * (int(cx["NOISE"]) + int(cx["NORMAL"]))
    assert r["slow_path_calls_in_loop"] == per_step * r["neuron_steps_per_iteration"]
    assert 0 < r["fast_path_instructions_per_neuron_step"] < r["instructions_per_neuron_step"]


@pytest.mark.parametrize("name", list(sass.ADAM_VARIANTS))
def test_adam_registers(adam_rows, name):
    """Within 64 registers (triton_adam.MAX_REGISTERS) without spilling, 8 blocks per SM;
    the slow paths' calls save registers on a small stack (no local memory in the loop)."""
    r = adam_rows[name]
    assert r["n_regs"] <= MAX_REGS and r["n_spills"] == 0 and r["stack_bytes"] <= 32
    assert r["blocks_per_sm"] >= 8


@pytest.mark.parametrize("name", list(ADAM_BUDGET))
def test_adam_instruction_budget(adam_rows, rows, name):
    r = adam_rows[name]
    assert r["instructions_per_neuron_step"] <= ADAM_BUDGET[name]
    assert r["instructions_per_neuron_step"] > 2 * rows["base"]["instructions_per_neuron_step"]  # (the loop found)


def test_adam_fusion_is_caught(adam_rows):
    for name, _ in ADAM_FUSED:
        assert adam_rows[name]["ffma_outside_division"] > 0
    assert adam_rows["fused adam"]["ffma_division_kernel"] >= adam_rows["adam"]["ffma_division_kernel"] > 0


def test_adam_kernel_source_matches_the_module():
    from fastneuron.kernels import triton_adam
    ns = sass.kernel_namespace("adam")
    for name in ("BLOCK_SIZE", "NUM_WARPS", "ENABLE_FP_FUSION", "MAX_UNROLLED_SAMPLES", "MAX_REGISTERS"):
        assert ns[name] == getattr(triton_adam, name)
    assert ns["PTX_PHILOX"]
    assert ns["adam_kernel"].arg_names == triton_adam.adam_kernel.arg_names
    # the report compiles with a value for every constexpr of the kernel, and only those
    assert set(sass.launch_constexprs(kernel="adam")) == {p.name for p in ns["adam_kernel"].params if p.is_constexpr}


def test_cli_reports_the_adam_kernel(adam_rows, tmp_path, capsys):
    path = tmp_path / "sass.json"
    assert sass.main(["--json", str(path), "--variant", "base", "--variant", "adam"]) == 0
    text = capsys.readouterr().out
    data = json.loads(path.read_text())
    assert [r["name"] for r in data["variants"]] == ["base", "adam"]
    assert [r["kernel"] for r in data["variants"]] == ["sgd", "adam"]
    assert "triton_adam.py:adam_kernel" in data["kernel adam"] and "adam / SGD base:" in text
    assert f"{adam_rows['adam']['instructions_per_neuron_step']:.2f}" in text
