"""Scoring many prompts that share a start on one KV cache, depth first.

One image judged under several policies (``--multi-label``: one variant per category) gives
prompts that agree up to the first policy text that differs, and differ after it. Prefilling
each would pay for the image once per prompt. Instead the engine prefills what they all share
once, then walks the rest as a tree of token runs: a run is forwarded once on the cache, its
subtrees are walked, and the cache is cut back to where the run began before the next
sibling. Every token is computed once, exactly as in its own prompt (same positions, same
causal attention), with no attention mask wider than one run.

This module is the tree and the walk; the engine supplies ``forward`` and ``cut`` (torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """One token of one or more sequences. ``scored`` lists the sequences whose total gains
    this token's log-probability; ``prompt_end`` marks the last prompt token of a sequence
    whose cache the caller wants kept."""

    token: int
    children: dict[int, Node] = field(default_factory=dict)
    scored: list[int] = field(default_factory=list)
    keep: bool = False


class PrefixTree:
    """Sequences of tokens after a shared, already-computed start.

    ``add(tokens, scored_from)`` adds one sequence whose tokens from ``scored_from`` on are
    scored (their log-probabilities summed into ``totals[sequence]``).
    """

    def __init__(self) -> None:
        self.root = Node(-1)
        self.count = 0

    def add(self, tokens: Sequence[int], scored_from: int, keep_at: int | None = None) -> int:
        """Add a sequence; ``keep_at`` (a length) marks where the caller wants the cache."""
        node = self.root
        for j, tok in enumerate(tokens):
            node = node.children.setdefault(tok, Node(tok))
            if j >= scored_from:
                node.scored.append(self.count)
            if keep_at is not None and j + 1 == keep_at:
                node.keep = True
        self.count += 1
        return self.count - 1


# forward(tokens, start, keep) -> log-probabilities after the last ``keep`` of ``tokens``
# (a [keep, vocab] tensor), the tokens placed at positions start.. on the cache.
Forward = Callable[[list[int], int, int], Any]


@dataclass
class Walk:
    """One depth-first walk: sums per sequence, and caches copied where asked."""

    forward: Forward
    cut: Callable[[int], None]  # cut the cache back to this many tokens
    copy: Callable[[int], Any]  # a copy of the cache's first n tokens
    totals: list[float] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)
    forwarded: int = 0  # tokens computed, for benchmarks

    def run(self, tree: PrefixTree, start: int, last: Any) -> list[float]:
        """Walk ``tree`` whose root sits at ``start`` tokens, ``last`` being the
        log-probabilities after them."""
        self.totals = [0.0] * tree.count
        self._children(tree.root, start, last)
        return self.totals

    def _children(self, node: Node, length: int, logp: Any) -> None:
        for child in node.children.values():
            for s in child.scored:
                self.totals[s] += float(logp[child.token])
            self._run_from(child, length)

    def _run_from(self, first: Node, length: int) -> None:
        """Forward the chain of single children from ``first`` (its tokens not in the cache
        yet), score inside it, walk below it, and cut the cache back."""
        run = [first]
        while len(run[-1].children) == 1:
            run.append(next(iter(run[-1].children.values())))
        ends_in_branch = bool(run[-1].children)
        todo = run if ends_in_branch else run[:-1]  # a leaf's token needs no forward
        if not todo:
            return
        # the positions whose next-token log-probabilities are read: inside the run for
        # scored tokens, and the last one for the subtrees
        needed = [i - 1 for i in range(1, len(run)) if run[i].scored]
        if ends_in_branch:
            needed.append(len(todo) - 1)
        keep = len(todo) - min(needed) if needed else 1
        logp = self.forward([n.token for n in todo], length, keep)
        self.forwarded += len(todo)
        offset = len(todo) - keep
        for i in range(1, len(run)):
            for s in run[i].scored:
                self.totals[s] += float(logp[i - 1 - offset][run[i].token])
        self.kept.extend(self.copy(length + i + 1) for i, n in enumerate(todo) if n.keep)
        if ends_in_branch:
            self._children(run[-1], length + len(todo), logp[-1])
        self.cut(length)
