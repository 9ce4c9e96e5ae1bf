"""Continual-learning strategies, one small plugin per file around the learner's one training loop.

| name           | experts                         | fusion | loss / extra                          |
| -------------- | ------------------------------- | ------ | ------------------------------------- |
| `mcil`         | first task only, then frozen    | AAVFM  | a*L_CW + (1-a)*L_MI once; analytic head |
| `mcil-paper`   | new per task, old frozen (MIFE) | AAVFM  | a*L_CW + (1-a)*L_MI; text prototypes  |
| `ranpac`       | none, no training               | -      | analytic head, random expansion       |
| `simplecil`    | none, no training               | -      | class means of frozen features        |
| `moe-adapters` | new per task, old frozen        | concat | cross-entropy (the paper's MoE-CLIP)  |
| `finetune`     | one shared set, never frozen    | concat | cross-entropy (naive partial tuning)  |
| `lwf`          | one shared set, never frozen    | concat | cross-entropy + distillation          |
| `icarl`        | one shared set, never frozen    | concat | + exemplar replay, nearest-mean class |
| `zero-shot`    | none, no training               | concat | text prototypes only                  |
| `joint`        | one shared set, never frozen    | concat | cross-entropy on all data seen so far |
| `cign`         | none: a grouping network over   | group- | class tokens, grouping, token KL,     |
|                | frozen tokens, old tokens frozen| ing    | continual grouping (CIGN)             |
| `mmcl`         | cross-modal experts over frozen | joint  | CE + sqrt(t) KD + alignment +         |
|                | tokens, new per task, old frozen| map    | preservation (MMCL)                   |
"""

from __future__ import annotations

from model.strategies.base import Strategy
from model.strategies.cign import CIGN
from model.strategies.finetune import FineTune
from model.strategies.icarl import ICaRL
from model.strategies.joint import Joint
from model.strategies.lwf import LwF
from model.strategies.mcil import MCIL
from model.strategies.mcil_paper import MCILPaper
from model.strategies.mmcl import MMCL
from model.strategies.moe_adapters import MoEAdapters
from model.strategies.ranpac import RanPAC
from model.strategies.simplecil import SimpleCIL
from model.strategies.zero_shot import ZeroShot

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (MCIL, MCILPaper, RanPAC, SimpleCIL, MoEAdapters, FineTune, LwF, ICaRL, ZeroShot,
                              Joint, CIGN, MMCL)
}


def create_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"strategy: unknown {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]()


__all__ = ["STRATEGIES", "Strategy", "create_strategy"]
