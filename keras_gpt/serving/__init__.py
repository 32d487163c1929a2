"""Serving: a SavedModel for TF Serving with the tokenizer and the decoding
loop inside (`export`), built from the TensorFlow graph in `graph`.

```python
from keras_gpt.serving import export_run
export_run("runs/demo", "exported/demo")     # exported/demo/1/
```
"""

from keras_gpt.serving.export import export_run, export_saved_model

__all__ = ["export_run", "export_saved_model"]
