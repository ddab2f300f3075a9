"""Models: `TransformerLM`, a GPT-style decoder-only language model.

```python
model = keras_dp.models.TransformerLM.from_preset("tiny")      # or "small", "base"
logits = model(tokens)                                          # [batch, seq, vocab]
text = model.generate("def main():", max_new_tokens=80, temperature=0.8, top_k=20)
```
"""

import keras_dp.schedules  # noqa: F401  (registers WarmupSchedule: saved optimizers load)
from keras_dp.models.presets import PRESETS
from keras_dp.models.transformer import CausalSelfAttention, TransformerBlock, TransformerLM

__all__ = ["PRESETS", "CausalSelfAttention", "TransformerBlock", "TransformerLM"]
