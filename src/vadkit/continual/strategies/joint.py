"""Joint training: one model fitted from scratch on the union of every task seen so far, after each task.

The upper bound a continual strategy is measured against (nothing is forgotten, since nothing is left out), at
the price of keeping every training image and retraining on all of them. For PatchCore it is the unified memory
bank over all products. The memory it reports counts the kept images as raw pixels at the model's input size
(H x W x 3 bytes each), the figure a raw replay memory of the same images would need.
"""

from __future__ import annotations

import numpy as np

from vadkit.continual.strategies.base import Strategy, state_bytes


class Joint(Strategy):
    """Refit a fresh model on all the training images seen so far, after each task."""

    name = "joint"

    def __init__(self, make_model) -> None:
        super().__init__(make_model)
        self.seen: list = []

    def learn(self, index: int, task, progress: bool | None = None) -> None:
        self.seen.extend(task.train)
        self.model = self.make_model()
        self.model.fit(list(self.seen), progress=progress)

    def memory(self) -> dict[str, int]:
        height, width = self.transform.output_size
        return {"model": state_bytes(self.model), "buffer": len(self.seen) * height * width * 3 * np.dtype(np.uint8).itemsize}
