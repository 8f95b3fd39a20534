"""The progress measure: fixed probe batches, evaluated without changing the model or any RNG state."""
import torch

from lossdiag.train.probe import draw_probe, relative_progress
from lossdiag.train.spec import spec_from_objects


class BatchNormDropout(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                         torch.nn.Dropout(0.5))
        self.head_a, self.head_b = torch.nn.Linear(8, 1), torch.nn.Linear(8, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.head_a(h), self.head_b(h)


def _spec():
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)) for _ in range(6)]

    def losses(model, batch):
        x, y = batch
        a, b = model(x)
        return {"a": torch.nn.functional.mse_loss(a, y), "b": torch.nn.functional.mse_loss(b, -y)}

    return spec_from_objects(BatchNormDropout(), lambda: iter(data), losses, None, None), data


def test_probe_is_the_first_batches_and_evaluating_changes_nothing():
    spec, data = _spec()
    model = spec.build_model()
    probe = draw_probe(spec, 3, seed=0)
    assert len(probe.batches) == 3 and all(torch.equal(p[0], d[0]) for p, d in zip(probe.batches, data))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = probe.evaluate(spec, model)
    second = probe.evaluate(spec, model)
    assert first == second and set(first) == {"a", "b"}
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_progress_is_the_relative_drop_on_the_same_batches():
    torch.manual_seed(0)
    spec, _ = _spec()
    model = spec.build_model()
    probe = draw_probe(spec, 2, seed=0)
    before = probe.evaluate(spec, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(0)
    for batch in probe.batches * 20:
        optimizer.zero_grad()
        spec.losses(model, batch)["a"].backward()
        optimizer.step()
    after = probe.evaluate(spec, model)
    progress = relative_progress(before, after)
    assert progress["a"] == (before["a"] - after["a"]) / before["a"] and progress["a"] > 0.2
    assert relative_progress({"a": 0.0}, {"a": 1.0}) == {"a": None}
