"""The built-in offline provider (`llm-offline`): answers without a language model, and says so.

It reads the task from `facts` (never from the prompt): "strategy.synthesize" builds a DSL
document from a template matched to the regime (templates.py), "strategy.improve" applies the
next fixed revision (templates.revise), "news.analyze" scores items with the lexicon
(lexicon.py). Every answer has `provider "offline"`, `is_llm False`, model "offline-v1".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plugins.builtin.llm_offline import lexicon, templates
from plugins.sdk import (
    LLMProvider,
    LLMTurn,
    LLMUnavailable,
    PluginContext,
    StructuredAnswer,
    ToolSpec,
    hookimpl,
)

NAME = "offline"
MODEL = "offline-v1"


class OfflineProvider:
    name = NAME
    models = (MODEL,)
    is_llm = False

    def complete_structured(self, *, model: str, system: str, messages: Sequence[LLMTurn],
                            tool: ToolSpec, max_tokens: int, facts: Mapping[str, Any]
                            ) -> StructuredAnswer:
        task = facts.get("task")
        if task == "strategy.synthesize":
            doc, reason = templates.build(str(facts.get("objective", "")),
                                          facts.get("constraints") or {},
                                          list(facts.get("universe") or ()),
                                          facts.get("regime") or {})
            answer: dict[str, Any] = doc
        elif task == "strategy.improve":
            answer, reason = templates.revise(facts["document"], int(facts.get("trial", 0)),
                                              facts.get("constraints") or {})
        elif task == "news.analyze":
            answer = {"analyses": [lexicon.analyse_item(item, facts.get("instruments") or ())
                                   for item in facts.get("items", ())]}
            reason = "lexicon"
        else:
            raise LLMUnavailable(f"the offline provider has no rule for task {task!r}")
        return StructuredAnswer(provider=NAME, model=MODEL, is_llm=False, tool_input=answer,
                                refusal=None, stop_reason=reason)


@hookimpl
def alphintra_llm_providers(context: PluginContext) -> list[LLMProvider]:
    return [OfflineProvider()]
