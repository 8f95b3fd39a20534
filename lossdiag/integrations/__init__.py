"""Optional integrations, one module per framework or logger; each imports its framework only when it is used.

- `lossdiag.integrations.tensorboard`: `to_tensorboard(writer)`, a Monitor `log=` for a SummaryWriter.
- `lossdiag.integrations.wandb`: `to_wandb(run)`, a Monitor `log=` for a W&B run.
- `lossdiag.integrations.lightning`: `LossDiagCallback` for a Lightning Trainer, `find_weights` to verify weights.
- `lossdiag.integrations.transformers`: `LossDiagTrainer` (and `LossDiagMixin`) for the Hugging Face Trainer,
  `find_weights` to verify weights.
"""
