"""P x K batches: ``people_per_batch`` (P) people, ``images_per_person`` (K) images each, one random variant each.

A person with fewer than K images contributes all of them and then repeats some (with a different random variant,
so repeats are still different inputs when augmentation variants exist). People are drawn without replacement
within an epoch-like cycle, so every person appears about equally often.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class PKSampler:
    """Yields ``(image_index, variant_index, label)`` arrays of length P*K, with labels = person indices."""

    def __init__(
        self,
        labels: Sequence[int] | npt.NDArray[np.int_],
        *,
        people_per_batch: int,
        images_per_person: int,
        n_variants: int,
        rng: np.random.Generator,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.by_person = [np.flatnonzero(labels == p) for p in np.unique(labels)]
        self.by_person = [ix for ix in self.by_person if len(ix) >= 2]
        if len(self.by_person) < 2:
            raise ValueError("need at least 2 people with 2 or more images")
        self.p = min(people_per_batch, len(self.by_person))
        self.k = images_per_person
        self.n_variants = n_variants
        self.rng = rng
        self._queue: list[int] = []

    def _next_people(self) -> list[int]:
        if len(self._queue) < self.p:
            self._queue.extend(int(i) for i in self.rng.permutation(len(self.by_person)))
        chosen: list[int] = []
        while len(chosen) < self.p:
            person = self._queue.pop(0)
            if person in chosen:  # the queue wrapped around: push it back for later
                self._queue.append(person)
                continue
            chosen.append(person)
        return chosen

    def batch(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        images: list[int] = []
        labels: list[int] = []
        for person in self._next_people():
            pool = self.by_person[person]
            take = self.rng.choice(pool, self.k, replace=len(pool) < self.k)
            images.extend(int(i) for i in take)
            labels.extend([person] * self.k)
        variant = self.rng.integers(0, self.n_variants, len(images))
        return np.array(images, dtype=np.int64), variant.astype(np.int64), np.array(labels, dtype=np.int64)
