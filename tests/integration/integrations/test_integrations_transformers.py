"""LossDiagTrainer on a tiny BERT with random weights: its two pre-training losses (masked LM and next sentence)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers", reason="the transformers extra is not installed")
pytest.importorskip("accelerate", reason="the transformers extra is not installed (accelerate)")
pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from lossdiag.integrations.transformers import LossDiagTrainer  # noqa: E402

VOCAB = 50
WEIGHTS = {"mlm": 1.0, "nsp": 0.5}


def terms(model, inputs) -> dict[str, torch.Tensor]:
    outputs = model(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
    return {"mlm": F.cross_entropy(outputs.prediction_logits.reshape(-1, VOCAB), inputs["labels"].reshape(-1)),
            "nsp": F.cross_entropy(outputs.seq_relationship_logits, inputs["next_sentence_label"])}


class PlainTrainer(transformers.Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        parts = terms(model, inputs)
        return WEIGHTS["mlm"] * parts["mlm"] + WEIGHTS["nsp"] * parts["nsp"]


class DiagnosedTrainer(LossDiagTrainer):
    fail_at = -1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.lossdiag.steps == self.fail_at:
            raise RuntimeError("the step failed")
        return self.lossdiag.combine(terms(model, inputs), WEIGHTS)


def dataset() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(48):
        ids = torch.randint(5, VOCAB, (12,), generator=g)
        labels = torch.where(torch.rand(12, generator=g) < 0.3, ids, torch.full_like(ids, -100))
        rows.append({"input_ids": torch.where(labels >= 0, torch.ones_like(ids), ids), "labels": labels,
                     "token_type_ids": (torch.arange(12) >= 6).long(),
                     "next_sentence_label": torch.randint(0, 2, (), generator=g)})
    return rows


def train(trainer_class, tmp_path, **options):
    """Eight updates of a tiny BertForPreTraining, randomly initialised from seed 0; returns the trainer."""
    transformers.set_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    model = transformers.BertForPreTraining(config)
    lossdiag = options.pop("lossdiag", None)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=4, save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
        **{"report_to": [], **options})
    extra = {} if lossdiag is None else {"lossdiag": lossdiag}
    trainer = trainer_class(model=model, args=args, train_dataset=dataset(), **extra)
    trainer.train()
    return trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_training_writes_the_report_logs_the_shares_and_stays_bitwise_the_same(tmp_path, accumulate):
    plain = train(PlainTrainer, tmp_path / "plain", gradient_accumulation_steps=accumulate)
    trainer = train(DiagnosedTrainer, tmp_path / "lossdiag", gradient_accumulation_steps=accumulate,
                    lossdiag={"out": tmp_path / "run", "every": 3})
    for (name, p), q in zip(trainer.model.named_parameters(), plain.model.parameters()):
        assert torch.equal(p, q), name
    assert (tmp_path / "run" / "report.html").is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == trainer.lossdiag_summary and summary["steps"] == 8 * accumulate
    recorded = [s for s in range(8 * accumulate) if trainer.lossdiag.schedule(s)]
    logged = [entry for entry in trainer.state.log_history if "lossdiag/mlm/share" in entry]
    assert [entry["step"] for entry in logged] == [s // accumulate + 1 for s in recorded]
    assert logged[0]["epoch"] == 0 < logged[-1]["epoch"] < trainer.state.epoch
    for entry in logged:
        assert entry["lossdiag/mlm/share"] + entry["lossdiag/nsp/share"] == pytest.approx(1.0)
        assert "lossdiag/cosine/mlm~nsp" in entry and "lossdiag/nsp/grad_norm" in entry
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [4, 8]


def test_tensorboard_reporting_carries_the_scalars(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = train(DiagnosedTrainer, tmp_path, report_to=["tensorboard"],
                    lossdiag={"out": tmp_path / "run", "every": 4})
    recorded = [s + 1 for s in range(8) if trainer.lossdiag.schedule(s)]
    (events_file,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(events_file.parent))
    events.Reload()
    for term in WEIGHTS:
        assert [e.step for e in events.Scalars(f"train/lossdiag/{term}/share")] == recorded == [1, 2, 4, 5]


def test_an_exception_in_compute_loss_closes_the_monitor_and_keeps_the_records(tmp_path):
    DiagnosedTrainer.fail_at = 5
    try:
        with pytest.raises(RuntimeError, match="the step failed"):
            train(DiagnosedTrainer, tmp_path, lossdiag={"out": tmp_path / "run", "every": 1})
    finally:
        DiagnosedTrainer.fail_at = -1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["ended_early"]
