"""``graph_path``: ``01,03,12,23,34,0>4=`` → a simple path from start to goal, e.g. ``034;``."""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from forklab.envs.tasks._base import (
    END,
    Example,
    Task,
    _body,
    _integer,
)


def _adjacency(edges: tuple, num_nodes: int) -> list[set[int]]:
    adj = [set() for _ in range(num_nodes)]
    for u, v in edges:
        adj[u].add(v)
        adj[v].add(u)
    return adj


def _distances(adj: list[set[int]], source: int) -> list[float]:
    """Breadth-first hop counts from ``source`` (inf where unreachable)."""
    dist = [float("inf")] * len(adj)
    dist[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] == float("inf"):
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


@functools.lru_cache(maxsize=4096)
def _simple_paths(edges: tuple, start: int, goal: int) -> tuple[str, ...]:
    """Every simple path from start to goal as ``"0234;"``, shortest first, then lexicographic."""
    adj = _adjacency(edges, 10)
    paths, stack = [], [(start, (start,))]
    while stack:  # depth-first; a simple path never revisits a node, so this terminates
        node, path = stack.pop()
        if node == goal:
            paths.append("".join(map(str, path)) + END)
            continue
        stack.extend((v, (*path, v)) for v in adj[node] if v not in path)
    return tuple(sorted(paths, key=lambda p: (len(p), p)))


@dataclass(frozen=True, kw_only=True)
class GraphPath(Task):
    """``01,03,12,23,34,0>4=`` → ``034;``: a simple path from start to goal in an undirected graph.

    Nodes are the digits ``0..num_nodes-1``; ``num_edges`` distinct random edges, listed as sorted
    pairs; start and goal are at least ``min_distance`` hops apart (so the answer is never a single
    given edge). Correct: starts at start, ends at goal, follows edges, never revisits a node. Every
    simple path counts, so there are often several, of different lengths, and each step is a choice
    of neighbour. Graded reward: 0.5 × the progress (in hops towards the goal) of the longest valid
    walk the response begins with, 1 for a correct path.

    ``shortest=True`` accepts only the shortest paths. The prompts and splits are unchanged, but a
    model trained on every simple path now has *longer* wrong answers (its detours) than correct
    ones: the positive/negative length gap that notebook 02 needs. A detour's graded reward is
    0.5 + 0.25 × (shortest hops / its hops), below 0.75.
    """

    name: ClassVar[str] = "graph_path"
    _size_args: ClassVar[str] = "`num_nodes` and `num_edges`"
    num_nodes: int = 6
    num_edges: int = 7
    min_distance: int = 2
    shortest: bool = False  # only shortest paths are correct: wrong answers are then longer (notebook 02)

    def _check_config(self) -> None:
        n = _integer("num_nodes", self.num_nodes, 3, 10)  # one digit per node
        d = _integer("min_distance", self.min_distance, 1, n - 1)
        _integer("num_edges", self.num_edges, d, n * (n - 1) // 2 - (d > 1))  # complete graph: all d = 1

    @property
    def max_prompt_len(self) -> int:
        return 3 * self.num_edges + 4

    @property
    def max_response_len(self) -> int:
        return self.num_nodes + 1

    def _sample_problem(self, rng: random.Random) -> tuple:
        pairs = list(itertools.combinations(range(self.num_nodes), 2))
        for _ in range(1000):
            edges = tuple(sorted(rng.sample(pairs, self.num_edges)))
            adj = _adjacency(edges, self.num_nodes)
            ends = [(s, g) for s in range(self.num_nodes) for g, d in enumerate(_distances(adj, s))
                    if self.min_distance <= d < float("inf")]
            if ends:
                return (edges, *rng.choice(ends))
        raise ValueError(f"`min_distance` = {self.min_distance} is unreachable with {self.num_edges} edges "
                         f"on {self.num_nodes} nodes")

    def _prompt(self, problem: tuple) -> str:
        edges, start, goal = problem
        return ",".join(f"{u}{v}" for u, v in edges) + f",{start}>{goal}="

    def _key(self, problem: tuple) -> tuple:
        edges, start, goal = problem
        return edges, min(start, goal), max(start, goal)  # a question asked both ways: one split

    def parse_prompt(self, prompt: str) -> Example:
        m = re.fullmatch(r"((?:[0-9]{2},)+)([0-9])>([0-9])=", prompt) if isinstance(prompt, str) else None
        pairs = [(int(p[0]), int(p[1])) for p in m[1].split(",")[:-1]] if m else []
        edges = tuple(sorted((min(p), max(p)) for p in pairs))
        start, goal = (int(m[2]), int(m[3])) if m else (0, 0)
        n = self.num_nodes
        ok = (m is not None and len(set(edges)) == len(edges) == self.num_edges and all(u != v for u, v in edges)
              and max(max(e) for e in edges + ((start, goal),)) < n)
        if not ok or not self.min_distance <= _distances(_adjacency(edges, n), start)[goal] < float("inf"):
            raise ValueError(f"`prompt` must look like '01,12,23,0>3=' with {self.num_edges} distinct edges on "
                             f"nodes 0..{n - 1} and a goal {self.min_distance}+ hops from the start, got {prompt!r}")
        return self.example((edges, start, goal))

    def _nodes(self, response: str) -> list[int] | None:
        body = _body(response)
        return [int(c) for c in body] if body and re.fullmatch("[0-9]+", body) else None

    def reward(self, example: Example, response: str) -> float:
        edges, start, goal = self._check_example(example).problem
        nodes = self._nodes(response)
        adj = _adjacency(edges, 10)
        if nodes is None or not self._is_path(adj, nodes, start, goal):
            return 0.0
        return float(not self.shortest or len(nodes) - 1 == _distances(adj, start)[goal])

    def graded_reward(self, example: Example, response: str) -> float:
        if self.reward(example, response) == 1.0:
            return 1.0
        edges, start, goal = example.problem
        nodes = self._nodes(response)
        if nodes is None or nodes[0] != start:
            return 0.0
        adj = _adjacency(edges, 10)
        if self.shortest and self._is_path(adj, nodes, start, goal):  # a detour: half credit to 0.75
            return 0.5 + 0.25 * _distances(adj, start)[goal] / (len(nodes) - 1)
        last, seen = start, {start}
        for v in nodes[1:]:  # the longest valid walk the response begins with
            if v not in adj[last] or v in seen:
                break
            last = v
            seen.add(v)
        to_goal = _distances(adj, goal)
        progress = (to_goal[start] - to_goal[last]) / to_goal[start]
        return 0.5 * min(1.0, max(0.0, progress))

    @staticmethod
    def _is_path(adj: list[set[int]], nodes: list[int], start: int, goal: int) -> bool:
        return (nodes[0] == start and nodes[-1] == goal and len(set(nodes)) == len(nodes)
                and all(v in adj[u] for u, v in itertools.pairwise(nodes)))

    def reference_answers(self, example: Example) -> list[str]:
        paths = _simple_paths(*self._check_example(example).problem)
        return [p for p in paths if len(p) == len(paths[0])] if self.shortest else list(paths)

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        edges, start, goal = example.problem
        adj = _adjacency(edges, 10)
        walk = [start]
        if rng.random() < 0.5:  # wander without ever reaching the goal, then stop
            for _ in range(rng.randint(1, self.num_nodes - 2)):
                options = sorted(adj[walk[-1]] - set(walk) - {goal})
                if not options:
                    break
                walk.append(rng.choice(options))
            if len(walk) > 1:
                return "".join(map(str, walk)) + END
        path = [int(c) for c in rng.choice(_simple_paths(edges, start, goal))[:-1]]
        skips = [i for i in range(1, len(path) - 1) if path[i + 1] not in adj[path[i - 1]]]
        if skips:  # jump over one node along an edge that is not there
            i = rng.choice(skips)
            path = path[:i] + path[i + 1 :]
        else:  # or straight to the goal (never a given edge: min_distance >= 2 by default)
            path = [start, goal]
        return "".join(map(str, path)) + END
