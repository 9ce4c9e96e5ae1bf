"""`finetune`: naive partial fine-tuning. One set of experts, trained on every task, never frozen.

The frozen backbone stays frozen (so exported engines stay valid); what is fine-tuned is the adapter
set and the fusion module, with plain cross-entropy and nothing against forgetting.
"""

from __future__ import annotations

from model.strategies.base import SharedExpertMixin, Strategy


class FineTune(SharedExpertMixin, Strategy):
    name = "finetune"
