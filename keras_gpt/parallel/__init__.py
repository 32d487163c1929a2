"""Training on several devices: the engines (`distribution`:
keras.distribution on JAX, tf.distribute on TensorFlow) and the memory
planner (`plan`). Which variable splits how is the model's own knowledge:
`keras_gpt.sharding`."""
