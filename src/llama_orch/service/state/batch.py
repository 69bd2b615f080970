"""A batch of a task's events as a reader gets them, numbered in the task's stream (the SSE `id:`), and the cut a
resumed reader needs: the events after the last one it saw."""

from __future__ import annotations

from dataclasses import dataclass

from llama_orch_gen.contracts.events import TaskEvent

from llama_orch.events import TokenRun

__all__ = ["Batch", "Item", "size"]

Item = TaskEvent | TokenRun


def size(item: Item) -> int:
    """How many stream events an item is (a run of tokens is one event per token)."""
    return len(item.texts) if isinstance(item, TokenRun) else 1


@dataclass(frozen=True, slots=True)
class Batch:
    first: int  # the number of the first event of `items`
    items: list[Item]
    final: bool  # the last item is the terminal event

    @property
    def next(self) -> int:
        """The number of the event after this batch's last one."""
        return self.first + sum(size(item) for item in self.items)

    def after(self, seen: int) -> Batch:
        """This batch without the events numbered `seen` or lower (a run of tokens is cut inside)."""
        skip = seen + 1 - self.first
        if skip <= 0:
            return self
        items: list[Item] = []
        first = self.first
        for item in self.items:
            if skip >= size(item):
                skip -= size(item)
                first += size(item)
                continue
            if skip and isinstance(item, TokenRun):
                item = TokenRun(item.first + skip, item.texts[skip:])
                first += skip
                skip = 0
            items.append(item)
        return Batch(first, items, self.final)
