"""What every command that runs a model needs: the device and precision, data as device tensors,
evaluation, processes of a distributed run, and files written atomically."""
