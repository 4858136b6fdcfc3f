"""The op contexts, one per family (batch, group, row norms, and the fused activations): each
checks its arguments, chooses the layout, calls the kernels and keeps what its backward needs.
The layers, the functional forms and SyncBatchNorm all call these."""
