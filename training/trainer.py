"""One DPO, ORPO or KTO LoRA run with TRL, on rows already built from the reward buffer.

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
from typing import Any, NamedTuple

from training.config import TrainConfig
from training.resources import peak_rss_mb, releases_memory
from training.upstream_warnings import quiet_upstream_deprecations

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


def train_logging_steps(trainer: Any) -> None:
    """`trainer.train()` with each step's metrics as a log line. Without a progress bar the
    Trainer prints every step's dict to stdout, into a demo's terminal or, as warnings, into
    a worker's log; as INFO lines they stay in the worker's log and out of the demo."""
    from transformers import PrinterCallback, TrainerCallback

    class LogSteps(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs:
                fields = " ".join(f"{key}={value}" for key, value in logs.items())
                log.info("training.step step=%s %s", state.global_step, fields)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogSteps())
    trainer.train()


class RunStart(NamedTuple):
    started: float  # time.monotonic() at the start
    tokenizer: Any
    peft_config: Any
    work: Path  # an empty temporary folder beside the output, renamed into place at the end


def start_run(
    config: TrainConfig, *, model_path: Path, output_dir: Path, task_type: str
) -> RunStart:
    """What every LoRA run (policy or reward model) begins with: torch threads, the clock,
    the tokenizer with a pad token (TRL's collators need one; eos, as TRL itself falls back
    to), the LoRA config for `task_type` ("CAUSAL_LM", or "SEQ_CLS": the score head is then
    trained and saved with the adapter) and a clean temporary folder."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    if not config.progress:
        from datasets import disable_progress_bars

        disable_progress_bars()  # "Tokenizing train dataset" bars in a worker's log or a demo
    quiet_upstream_deprecations()
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type=task_type,
    )
    work = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    return RunStart(started, tokenizer, peft_config, work)


FULL_PRECISION: dict[str, bool] = {"bf16": False, "fp16": False}
"""TRL's configs default to bf16 mixed precision. On a CPU without native bf16 (AVX2 only,
e.g. AMD EPYC) every matmul then falls back to torch's single-threaded reference GEMM: a
12-pair DPO run of the demo had not finished after 7 minutes; in float32 it trained in 106 s.
The model is loaded in float32 and trains in float32, on any CPU."""


def training_arguments(config: TrainConfig, work: Path) -> dict[str, Any]:
    """The arguments every TRL config here shares (DPO, KTO, ORPO and the reward model):
    float32 on the CPU, a constant learning rate, no checkpoints, logs every step, and
    batch_size reached by accumulating small forward passes (`TrainConfig.passes`)."""
    per_pass, passes = config.passes()
    return {
        "output_dir": str(work / "trainer"),
        "use_cpu": True,
        **FULL_PRECISION,
        "per_device_train_batch_size": per_pass,
        "gradient_accumulation_steps": passes,
        "num_train_epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "max_length": config.max_length,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": config.seed,
        "disable_tqdm": not config.progress,
    }


@releases_memory
def train_adapter(
    config: TrainConfig, rows: list[dict[str, Any]], *, model_path: Path, output_dir: Path
) -> TrainOutcome:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    started, tokenizer, peft_config, work = start_run(
        config, model_path=model_path, output_dir=output_dir, task_type="CAUSAL_LM"
    )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    common: dict[str, Any] = training_arguments(config, work) | {
        "beta": config.beta,
        # Checkpointing trades compute for memory; at these sizes compute is the bottleneck.
        "activation_checkpointing": False,
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
    elif config.method == "orpo":
        trainer = _orpo_trainer(rows, model, tokenizer, peft_config, common)
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
    train_logging_steps(trainer)
    outcome = save_trained(trainer, tokenizer, work, output_dir, started)
    log.info(
        "training.done method=%s examples=%s steps=%s seconds=%.1f",
        config.method,
        len(rows),
        outcome.steps,
        outcome.seconds,
    )
    return outcome


def _orpo_trainer(
    rows: list[dict[str, Any]],
    model: Any,
    tokenizer: Any,
    peft_config: Any,
    common: dict[str, Any],
) -> Any:
    """ORPO (TRL's experimental ORPOTrainer) on the same pairs as DPO: the chosen answers'
    NLL plus `beta` (the paper's lambda) times the log odds ratio of chosen over rejected.
    No reference model: only the policy's forward pass, where DPO also runs the base's."""
    import warnings

    from datasets import Dataset

    with warnings.catch_warnings():
        # TRL warns on import that its experimental APIs may change; tests/training runs
        # ORPO end to end on the installed TRL.
        warnings.simplefilter("ignore", UserWarning)
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    trainer = ORPOTrainer(
        model=model,
        args=ORPOConfig(**common),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # Unlike DPO and KTO, ORPO keeps a pair whose prompt fills max_length with nothing of
    # its answers left (a NaN loss): drop those here, as the other trainers do.
    tokenized: Any = trainer.train_dataset
    trainer.train_dataset = tokenized.filter(
        lambda row: (
            any(label != -100 for label in row["chosen_labels"])
            and any(label != -100 for label in row["rejected_labels"])
        )
    )
    return trainer
