"""Training stacks beyond a static eager float32 graph (issue 10, items 1-7 and 9): aliased gradients, dynamic
graphs, low precision, complex parameters, activation checkpointing, torch.compile, tied embeddings, memory."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import lossdiag
from cli_helpers import ENV, run_cli
from lossdiag import Monitor
from lossdiag.errors import SpecError
from lossdiag.record.stream import read_records
from paths import ROOT
from reference import assert_gram_matches, shared_gram

SEED = 0


class RecordingSGD(torch.optim.SGD):
    """SGD at lr 0 (the model stays at its initial state) that keeps a copy of every .grad it is asked to apply."""

    def __init__(self, params, seen: list) -> None:
        super().__init__(params, lr=0.0)
        self.seen = seen

    def step(self, closure=None):
        self.seen.append([None if p.grad is None else p.grad.clone() for p in self.param_groups[0]["params"]])
        return super().step(closure)


def profile_updates(make_model, batches, losses, steps, weights=None) -> list[list]:
    """The .grad the profile hands its optimizer on each step (every step recorded), through the public API."""
    seen: list = []
    lossdiag.profile(make_model, batches, losses, steps=steps, every=1, no_checks=True, no_verify=True,
                     weights=weights, make_optimizer=lambda params: RecordingSGD(params, seen))
    return seen


def backward_updates(make_model, batches, losses, weights=None) -> list[list]:
    """What total.backward() gives on the same initial model, batch by batch."""
    torch.manual_seed(SEED)
    model = make_model()
    updates = []
    for batch in batches:
        terms = losses(model, batch)
        total = sum((weights or {}).get(name, 1.0) * value for name, value in terms.items())
        grads = torch.autograd.grad(total, list(model.parameters()), allow_unused=True)
        updates.append(grads)
    return updates


def assert_same_updates(actual: list[list], expected: list[list]) -> None:
    assert len(actual) == len(expected)
    for step, (got, want) in enumerate(zip(actual, expected)):
        for k, (g, w) in enumerate(zip(got, want)):
            if w is None:
                assert g is None or not g.any(), (step, k)
            else:
                assert g is not None, (step, k)
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7, msg=f"step {step}, parameter {k}")


def monitor_records(tmp_path: Path, model: nn.Module, steps, losses, lr: float = 0.1, **options
                    ) -> tuple[dict, list[dict], list]:
    """Run a Monitor (every step recorded) over `steps` batches, training with SGD; the header, the step records,
    and per step the brute-force Gram matrix over the parameters that step's graph shares."""
    monitor = Monitor(model, out=tmp_path, every=1, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    kept = []
    for batch in steps:
        terms = losses(model, batch)
        kept.append(shared_gram(terms, model))
        loss = monitor.combine(terms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.close()
    records = read_records(tmp_path / "records.jsonl")[0]
    return records[0], [r for r in records if r["kind"] == "step"], kept


# 1. Aliased gradients ------------------------------------------------------------------------------------------


class SharedPlusDelta(nn.Module):
    """Two tasks, each with the weight W + D[t] (a shared weight plus a per-task delta, as LoRA's W + dW)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Parameter(torch.randn(4, 3))
        self.delta = nn.ParameterList([nn.Parameter(0.1 * torch.randn(4, 3)) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x @ (self.shared + d) for d in self.delta]


def aliased_losses(model: SharedPlusDelta, x: torch.Tensor) -> dict[str, torch.Tensor]:
    first, second = model(x)
    return {"first": first.pow(2).mean(), "second": (second - 1).abs().mean()}


@pytest.mark.parametrize("weights", [None, {"first": 0.3, "second": 2.0}])
def test_profile_update_equals_backward_of_the_total_when_autograd_aliases_gradients(weights):
    batches = [torch.randn(5, 4, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    actual = profile_updates(SharedPlusDelta, batches, aliased_losses, steps=2, weights=weights)
    assert_same_updates(actual, backward_updates(SharedPlusDelta, batches, aliased_losses, weights))


# 2. Dynamic graphs ---------------------------------------------------------------------------------------------


class Routed(nn.Module):
    """A mixture of two experts: the batch's first column picks the expert both heads use in this step."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList([nn.Linear(4, 6) for _ in range(2)])
        self.head_a = nn.Linear(6, 1)
        self.head_b = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.experts[int(x[0, 0] > 0)](x))
        return self.head_a(h), self.head_b(h)


def routed_losses(model: Routed, x: torch.Tensor) -> dict[str, torch.Tensor]:
    a, b = model(x)
    return {"a": a.pow(2).mean(), "b": (b - 2).pow(2).mean()}


def routed_batches() -> list[torch.Tensor]:
    batches = [torch.randn(6, 4, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    for batch, sign in zip(batches, (-1.0, 1.0, -1.0)):
        batch[0, 0] = sign
    return batches


def test_profile_updates_a_parameter_first_reached_after_step_0():
    batches = routed_batches()
    actual = profile_updates(Routed, batches, routed_losses, steps=3)
    assert_same_updates(actual, backward_updates(Routed, batches, routed_losses))


def test_monitor_measures_the_expert_routed_to_in_each_step(tmp_path):
    torch.manual_seed(SEED)
    model = Routed()
    _, steps, kept = monitor_records(tmp_path, model, routed_batches(), routed_losses)
    for record, expected in zip(steps, kept):
        assert_gram_matches(record["grad"]["gram"], expected)
    assert "experts.1" in steps[1]["grad"]["layers"] and "experts.1" not in steps[0]["grad"]["layers"]


def test_monitor_measures_layers_unfrozen_mid_training(tmp_path):
    torch.manual_seed(SEED)
    model = Routed()
    model.experts[0].weight.requires_grad_(False)
    monitor = Monitor(model, out=tmp_path, every=1)
    batches = routed_batches()
    kept = []
    for step, batch in enumerate([batches[0], batches[0]]):
        if step == 1:
            model.experts[0].weight.requires_grad_(True)
        terms = routed_losses(model, batch)
        kept.append(shared_gram(terms, model))
        monitor.combine(terms).backward()
    monitor.close()
    steps = [r for r in read_records(tmp_path / "records.jsonl")[0] if r["kind"] == "step"]
    assert steps[1]["grad"]["norms"]["a"] > steps[0]["grad"]["norms"]["a"]
    for record, expected in zip(steps, kept):
        assert_gram_matches(record["grad"]["gram"], expected)


# 3. Low precision, 4. complex parameters -----------------------------------------------------------------------


class Scaled(nn.Module):
    """One shared weight of the given dtype, two terms on it."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(64, 8).to(dtype))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = x.to(self.weight.dtype) @ self.weight
        if y.is_complex():
            return {"near": (y - (1 + 1j)).abs().pow(2).mean(), "far": (y + 2j).abs().pow(2).mean()}
        return {"large": (300.0 * y).sum().float(), "small": y.pow(2).mean().float()}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
def test_monitor_numbers_in_low_precision_and_complex_match_brute_force(tmp_path, dtype):
    torch.manual_seed(SEED)
    model = Scaled(dtype)
    batches = [torch.randn(4, 64, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    header, steps, kept = monitor_records(tmp_path, model, batches, lambda m, x: m(x), lr=1e-4)
    for record, expected in zip(steps, kept):
        assert "nonfinite" not in record
        assert_gram_matches(record["grad"]["gram"], expected)
        assert expected[0, 1] != 0
        if dtype != torch.complex64:
            assert expected[0, 0].sqrt() > 256  # past float16's range once squared


def test_profile_trains_a_float16_model_whose_gradient_norm_passes_256():
    batches = [torch.randn(4, 64, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    result = lossdiag.profile(lambda: Scaled(torch.float16), batches, lambda m, x: m(x), steps=2, every=1,
                              no_checks=True)
    assert not [f for f in result.summary["findings"] if f["code"] == "non-finite"]
    steps = [r for r in result.records if r.get("kind") == "step"]
    assert all("nonfinite" not in r for r in steps)
    assert not [r for r in result.records if r.get("kind") == "nonfinite-update"]


# 5. Activation checkpointing -----------------------------------------------------------------------------------


class Checkpointed(nn.Module):
    """A BatchNorm block run under torch.utils.checkpoint, and two heads on it."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.block = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Tanh())
        self.head_a = nn.Linear(6, 1)
        self.head_b = nn.Linear(6, 1)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = checkpoint(self.block, self.stem(x), use_reentrant=self.reentrant)
        return self.head_a(h), self.head_b(h)


def checkpointed_losses(model: Checkpointed, x: torch.Tensor) -> dict[str, torch.Tensor]:
    a, b = model(x)
    return {"a": a.pow(2).mean(), "b": (b - 1).pow(2).mean()}


def checkpointed_batches() -> list[torch.Tensor]:
    return [torch.randn(8, 4, generator=torch.Generator().manual_seed(s)) for s in range(3)]


def train_checkpointed(monitor_out: Path | None) -> nn.Module:
    torch.manual_seed(SEED)
    model = Checkpointed(reentrant=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = Monitor(model, out=monitor_out, every=1) if monitor_out else None
    for batch in checkpointed_batches():
        terms = checkpointed_losses(model, batch)
        loss = monitor.combine(terms) if monitor else sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if monitor:
        monitor.close()
    return model


def test_monitor_stays_neutral_under_non_reentrant_checkpointing_with_batchnorm(tmp_path):
    plain = train_checkpointed(None)
    monitored = train_checkpointed(tmp_path)
    for (name, a), b in zip(monitored.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


def test_profile_keeps_batchnorm_statistics_as_one_backward_of_the_total_leaves_them():
    built: list[nn.Module] = []
    trained: list[list] = []

    def make_model() -> nn.Module:
        built.append(Checkpointed(reentrant=False))
        return built[-1]

    lossdiag.profile(make_model, checkpointed_batches()[:1], checkpointed_losses, steps=1, every=1, no_checks=True,
                     make_optimizer=lambda params: RecordingSGD(params, trained))
    model = next(m for m in built if any(p.grad is not None for p in m.parameters()))  # the one that trained
    torch.manual_seed(SEED)
    plain = Checkpointed(reentrant=False)
    sum(checkpointed_losses(plain, checkpointed_batches()[0]).values()).backward()
    for (name, a), b in zip(model.named_buffers(), plain.buffers()):
        assert torch.equal(a, b), name


def test_reentrant_checkpointing_is_refused_at_the_first_call_with_the_workaround(tmp_path):
    torch.manual_seed(SEED)
    model = Checkpointed(reentrant=True)
    monitor = Monitor(model, out=tmp_path, every=1)
    with pytest.raises(SpecError, match="use_reentrant=False") as error:
        monitor.combine(checkpointed_losses(model, checkpointed_batches()[0]))
    assert "\n" not in str(error.value)


TWO_TERMS_FILE_TAIL = """
def batches():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 4, generator=g) for _ in range(4)]

def losses(model, x):
    a, b = model(x)
    return {{"a": a.pow(2).mean(), "b": (b - 1).pow(2).mean()}}
"""
"""The batches and two loss terms of the model files the profile CLI is run on."""

MODEL_FILE = """
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 6)
        self.heads = nn.ModuleList([nn.Linear(6, 1), nn.Linear(6, 1)])

    def forward(self, x):
        h = {trunk}
        return [head(h) for head in self.heads]

def build_model():
    return {build}
""" + TWO_TERMS_FILE_TAIL


@pytest.mark.slow
@pytest.mark.parametrize("trunk, build, message", [
    ("checkpoint(lambda t: torch.tanh(self.trunk(t)), x.requires_grad_(), use_reentrant=True)", "Model()",
     "use_reentrant=False"),
    ("torch.tanh(self.trunk(x))", "torch.compile(Model(), backend='aot_eager')", "without torch.compile"),
])
def test_profile_refuses_graphs_it_cannot_take_apart_with_one_line_and_exit_2(tmp_path, trunk, build, message):
    model_py = tmp_path / "model.py"
    model_py.write_text(MODEL_FILE.format(trunk=trunk, build=build))
    done = run_cli("profile", model_py, "--steps", "4", "--every", "2", "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr


# 6. torch.compile ----------------------------------------------------------------------------------------------


def test_a_compiled_model_is_refused_at_the_first_combine_naming_what_works(tmp_path):
    torch.manual_seed(SEED)
    model = Routed()
    compiled = torch.compile(model, backend="aot_eager")
    monitor = Monitor(model, out=tmp_path, every=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(SpecError, match="without torch.compile") as error:
        monitor.combine(routed_losses(compiled, routed_batches()[0]))
    assert "\n" not in str(error.value)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())


COMPILED_FILE = """
import torch
import torch.nn as nn


@torch.compile(backend="aot_eager")
def pooled(h):
    # a compiled function on activations that holds no parameter, as torchvision's roi_align fallback
    return torch.stack([h[:, :3].amax(1), h[:, 3:].mean(1)], 1) * torch.sigmoid(h).sum(1, keepdim=True)


class Model(nn.Module):
    def __init__(self, compile_trunk=False):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        if compile_trunk:
            self.trunk = torch.compile(self.trunk, backend="aot_eager")
        self.heads = nn.ModuleList([nn.Linear(2, 1), nn.Linear(2, 1)])

    def forward(self, x):
        p = pooled(self.trunk(x))
        return [head(p) for head in self.heads]


def build_model():
    return Model({compile_trunk})
""" + TWO_TERMS_FILE_TAIL


def compiled_example(tmp_path: Path, compile_trunk: bool):
    """COMPILED_FILE written out and imported: a free function compiled inside forward, the trunk compiled too
    when `compile_trunk`."""
    path = tmp_path / "compiled_model.py"
    path.write_text(COMPILED_FILE.format(compile_trunk=compile_trunk))
    spec = importlib.util.spec_from_file_location("compiled_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_monitor_measures_through_a_compiled_function_that_holds_no_parameter(tmp_path):
    example = compiled_example(tmp_path, compile_trunk=False)
    torch.manual_seed(SEED)
    model = example.build_model()
    header, steps, kept = monitor_records(tmp_path / "run", model, example.batches(), example.losses)
    assert header["shared_parameters"]["names"] == ["trunk.0.weight", "trunk.0.bias"]
    assert len(steps) == 4
    for record, expected in zip(steps, kept):
        assert_gram_matches(record["grad"]["gram"], expected)
    torch.manual_seed(SEED)
    plain = example.build_model()
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1)
    for batch in example.batches():
        optimizer.zero_grad()
        sum(example.losses(plain, batch).values()).backward()
        optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))


def test_profile_update_through_a_compiled_function_equals_backward_of_the_total(tmp_path):
    example = compiled_example(tmp_path, compile_trunk=False)
    batches = example.batches()
    actual = profile_updates(example.build_model, batches, example.losses, steps=len(batches))
    assert_same_updates(actual, backward_updates(example.build_model, batches, example.losses))


def test_a_compiled_submodule_holding_shared_parameters_is_refused_naming_it(tmp_path):
    example = compiled_example(tmp_path, compile_trunk=True)
    torch.manual_seed(SEED)
    model = example.build_model()
    monitor = Monitor(model, out=tmp_path / "run", every=1)
    with pytest.raises(SpecError, match="'trunk' without torch.compile") as error:
        monitor.combine(example.losses(model, example.batches()[0]))
    assert "\n" not in str(error.value) and "'a', 'b'" in str(error.value)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("compile_trunk", [False, True])
def test_profile_cli_measures_a_compiled_function_and_refuses_a_compiled_shared_trunk(tmp_path, compile_trunk):
    model_py = tmp_path / "model.py"
    model_py.write_text(COMPILED_FILE.format(compile_trunk=compile_trunk))
    done = run_cli("profile", model_py, "--steps", "3", "--every", "1", "--no-verify", "--out", tmp_path / "out",
                   timeout=240)
    if compile_trunk:
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "'trunk' without torch.compile" in lines[0] and "Traceback" not in done.stderr
        assert not (tmp_path / "out").exists()
    else:
        assert done.returncode in (0, 1), done.stderr
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["shared_parameters"]["names"] == ["trunk.0.weight", "trunk.0.bias"]
        assert set(summary["dominance"]) == {"a", "b"}


# 7. Tied embeddings and proxies --------------------------------------------------------------------------------


class TiedLanguageModel(nn.Module):
    """BERT's layout in small: a token embedding, encoder layers, an LM head tied to the embedding, and a
    sentence classifier on the first position."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.encoder = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.classifier = nn.Linear(8, 2)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.embedding(tokens))
        return h @ self.embedding.weight.T, self.classifier(h[:, 0])


def tied_lm_losses(model: TiedLanguageModel, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    logits, sentence = model(tokens)
    return {"mlm": F.cross_entropy(logits.reshape(-1, 20), tokens.reshape(-1)),
            "nsp": F.cross_entropy(sentence, tokens[:, 1] % 2)}


def test_last_layer_scope_picks_the_last_encoder_layer_not_the_tied_embedding(tmp_path):
    torch.manual_seed(SEED)
    tokens = [torch.randint(0, 20, (4, 5), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    header, steps, _ = monitor_records(tmp_path, TiedLanguageModel(), tokens, tied_lm_losses, scope="last-layer")
    assert header["shared_modules"] == ["encoder.2"]
    assert set(steps[0]["grad"]["layers"]) == {"encoder.2"}


class EarlyExit(nn.Module):
    """An auxiliary output that leaves the trunk before `upper`, the representation the other two terms use."""

    def __init__(self) -> None:
        super().__init__()
        self.lower = nn.Linear(4, 6)
        self.upper = nn.Sequential(nn.Linear(6, 6), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(6, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        low = torch.tanh(self.lower(x))
        high = self.upper(low)
        return [self.heads[0](low), self.heads[1](high), self.heads[2](high)]


def test_representation_scope_does_not_call_a_term_leaving_before_it_unshared(tmp_path):
    torch.manual_seed(SEED)
    model = EarlyExit()
    batches = [torch.randn(8, 4, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    losses = lambda m, x: {name: out.pow(2).mean() for name, out in zip(("aux", "a", "b"), m(x))}  # noqa: E731
    header, _, _ = monitor_records(tmp_path, model, batches, losses, scope="representation", at="upper")
    assert header["term_shared_parameters"]["aux"] == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not [f for f in summary["findings"] if f["code"] == "no-shared-params"]
    assert "leaves the model before" in summary["scope_note"]


# 9. Memory -----------------------------------------------------------------------------------------------------


MEMORY_CHILD = """
import torch
from lossdiag import Monitor

def kib(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])

torch.manual_seed(0)
model = torch.nn.Linear(4096, 4096, bias=False)  # 64 MiB of shared parameters
monitor = Monitor(model, out={out!r}, every=1)
extra = []
for step in range(2):  # the first step also maps code and allocator arenas that stay, so the second one counts
    y = model(torch.randn(2, 4096))
    terms = {{"a": y.pow(2).mean(), "b": y.sin().mean()}}
    open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from the current RSS
    before = kib("VmRSS")
    monitor.record(terms)
    extra.append(kib("VmHWM") - before)
print(extra[-1])
"""


def test_a_recorded_step_holds_at_most_k_plus_one_copies_of_the_shared_parameters(tmp_path):
    child = MEMORY_CHILD.format(out=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], env={**ENV, "MALLOC_MMAP_THRESHOLD_": "65536"},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    extra_mib = int(done.stdout.split()[-1]) / 1024
    assert extra_mib <= 3 * 64, extra_mib
