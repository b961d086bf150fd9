"""Per-assistant evaluation: shipped sets, metrics, a runner against a served model, the
base-versus-adapter comparison and the `loopgram eval` command.

- `sets`     load and validate `sets/<assistant>.yaml` (paraphrase, summarize, moderate, label)
- `metrics`  pure metric functions and the calibrated similarity thresholds
- `scoring`  answers -> per-item records and a set's metrics
- `runner`   `evaluate(...)`: ask the model every item and score the answers
- `compare`  `compare(...)`: the base model and the active adapter on the same set
- `command`  `eval_command(...)`, called by the CLI
"""
