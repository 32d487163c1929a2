"""Generation: predict -> sample -> append, one cached step per token.

`generate` (in `generator`) checks the settings and turns prompts into id
rows; `decoding` runs the compiled loop; `samplers` holds temperature,
top-k/top-p/min-p, the repetition penalty and the keyed noise;
`torch_decoder` is the lean PyTorch decoding step.

```python
from keras_gpt.generation import generate
generate(model, "Once upon", tokenizer=tokenizer, max_new_tokens=40)
```
"""

from keras_gpt.generation.generator import generate

__all__ = ["generate"]
