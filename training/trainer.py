"""One DPO or KTO LoRA run with TRL, on rows already built from the reward buffer.

The adapter is written to a temporary folder and renamed into place only when complete,
so a run killed midway never leaves a half-written adapter that could be deployed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.resources import peak_rss_mb

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    adapter_path: Path
    seconds: float
    steps: int
    peak_rss_mb: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        logged = [h for h in self.history if "loss" in h]
        return logged[-1] if logged else {}


def save_trained(
    trainer: Any,
    tokenizer: Any,
    work: Path,
    output_dir: Path,
    started: float,
    extra_files: dict[str, str] | None = None,
) -> TrainOutcome:
    """Save a finished TRL run into `output_dir` atomically (written under `work`, then
    renamed into place: a reader never sees half a model) and describe it."""
    saved = work / "adapter"
    trainer.save_model(str(saved))
    tokenizer.save_pretrained(str(saved))
    for name, text in (extra_files or {}).items():
        (saved / name).write_text(text, encoding="utf-8")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(saved, output_dir)
    shutil.rmtree(work, ignore_errors=True)
    history = [
        {k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
        for entry in trainer.state.log_history
    ]
    return TrainOutcome(
        adapter_path=output_dir,
        seconds=time.monotonic() - started,
        steps=int(trainer.state.global_step),
        peak_rss_mb=peak_rss_mb(),
        history=history,
    )


def train_adapter(
    config: TrainConfig, rows: list[dict[str, Any]], *, model_path: Path, output_dir: Path
) -> TrainOutcome:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    work = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    common: dict[str, Any] = {
        "output_dir": str(work / "trainer"),
        "use_cpu": True,
        "per_device_train_batch_size": config.batch_size,
        "num_train_epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "beta": config.beta,
        "max_length": config.max_length,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
        # Checkpointing trades compute for memory; at these sizes compute is the bottleneck.
        "activation_checkpointing": False,
        "seed": config.seed,
        "disable_tqdm": not config.progress,
    }
    if config.method == "dpo":
        from trl.trainer.dpo_config import DPOConfig
        from trl.trainer.dpo_trainer import DPOTrainer

        dpo: dict[str, Any] = {"precompute_ref_log_probs": config.precompute_ref}
        if config.sft_weight > 0:
            # RPO: the DPO loss plus the chosen answers' NLL. A few dozen pairs move a small
            # model's style little under DPO alone (it only widens a margin); the NLL term
            # also pulls the policy towards the chosen text itself.
            dpo |= {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.sft_weight]}
        trainer: Any = DPOTrainer(
            model=model,
            args=DPOConfig(**common, **dpo),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        from trl.trainer.kto_config import KTOConfig
        from trl.trainer.kto_trainer import KTOTrainer

        trainer = KTOTrainer(
            model=model,
            args=KTOConfig(**common),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    if len(trainer.train_dataset) == 0:
        # TRL drops examples with nothing left to learn from once truncated to max_length.
        raise ValueError(
            f"none of the {len(rows)} examples fits max_length={config.max_length} tokens "
            "with its answer: raise max_length"
        )
    trainer.train()
    outcome = save_trained(trainer, tokenizer, work, output_dir, started)
    log.info(
        "training.done method=%s examples=%s steps=%s seconds=%.1f",
        config.method,
        len(rows),
        outcome.steps,
        outcome.seconds,
    )
    return outcome
