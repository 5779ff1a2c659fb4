"""The groundedness judge: the lexical support score, the model's grade through the gateway (its HTTP is
``httpx.MockTransport``), sampling, and the metric observed in the background."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client import REGISTRY

from ragserve.domain import Answer, Citation, SearchHit
from ragserve.llm.breaker import CircuitBreaker
from ragserve.llm.egress import EgressLimiter
from ragserve.llm.gateway import LLMGateway, ProviderSlot
from ragserve.llm.judge import GroundednessJudge, evidence_of, lexical_support, parse_score
from ragserve.llm.openai_compat import OpenAICompatLLM
from ragserve.settings_llm import LLMRetrySettings

LEAVE = (
    "Employees get 25 days of paid leave per year. Unused leave days expire at the end of March. "
    "Requests for leave go to the line manager two weeks ahead."
)
LAPTOPS = "Every employee receives a laptop on the first day. Laptops are replaced every three years."
CONTEXTS = [
    SearchHit(1, "d1", "leave", "Leave policy", None, LEAVE, 1.0, {}),
    SearchHit(2, "d2", "laptops", "Equipment", None, LAPTOPS, 0.5, {}),
]


def answer(text: str, *cited: int, abstained: bool = False) -> Answer:
    citations = tuple(Citation.of(CONTEXTS[n - 1], n, CONTEXTS[n - 1].text[:40]) for n in cited)
    return Answer(text=text, abstained=abstained, citations=citations, generator="test")


def groundedness_count(judge: str) -> float:
    return REGISTRY.get_sample_value("ragserve_answer_groundedness_score_count", {"judge": judge}) or 0.0


def test_lexical_score_is_high_for_a_supported_answer_and_low_for_an_unsupported_one() -> None:
    supported = "Employees receive 25 days of paid leave each year [1]. Unused days expire in March [1]."
    unsupported = "Staff may work remotely on Fridays [1]. Parking permits cost 40 euros monthly [1]."
    assert lexical_support(supported, [LEAVE]) >= 0.8
    assert lexical_support(unsupported, [LEAVE]) <= 0.2
    # One unsupported sentence of two halves the score, whatever the length of the supported one.
    mixed = "Employees get 25 days of paid leave per year [1]. Parking permits cost 40 euros [1]."
    assert 0.4 <= lexical_support(mixed, [LEAVE]) <= 0.6
    assert lexical_support("", [LEAVE]) == 0.0


def test_evidence_is_the_cited_passages_or_all_when_none_is_cited() -> None:
    assert evidence_of(answer("Laptops are replaced every three years [2].", 2), CONTEXTS) == [LAPTOPS]
    assert evidence_of(answer("Laptops are replaced every three years."), CONTEXTS) == [LEAVE, LAPTOPS]
    # Judged against what it cites, an answer citing the wrong passage is not grounded.
    wrong = answer("Laptops are replaced every three years [1].", 1)
    assert lexical_support(wrong.text, evidence_of(wrong, CONTEXTS)) < 0.3


@pytest.mark.parametrize(
    ("reply", "score"), [("0.8", 0.8), ("Score: 1", 1.0), ("0", 0.0), (".75\n", 0.75), ("1.0 - fully", 1.0)]
)
def test_parse_score_takes_the_first_number_in_range(reply: str, score: float) -> None:
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["supported", "7", "12.5", "1.5", ""])
def test_parse_score_rejects_replies_without_a_score(reply: str) -> None:
    with pytest.raises(ValueError, match="no score"):
        parse_score(reply)


def gateway(reply: str | None) -> tuple[LLMGateway, list[dict[str, object]]]:
    """A gateway over one provider replying ``reply`` (``None``: HTTP 500); the requests it received."""
    seen: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if reply is None:
            return httpx.Response(500, text="down")
        usage = {"prompt_tokens": 40, "completion_tokens": 2}
        return httpx.Response(200, json={"choices": [{"message": {"content": reply}}], "usage": usage})

    llm = OpenAICompatLLM("judge-model", "http://upstream/v1", "m", None, transport=httpx.MockTransport(handle))
    slot = ProviderSlot(llm, CircuitBreaker("judge-model", 5, 60.0), EgressLimiter("judge-model", 4, None))
    retry = LLMRetrySettings(max_attempts=1)
    return LLMGateway([slot], retry, deadline_seconds=5.0), seen


async def test_the_model_grades_when_configured_and_sees_the_cited_passage() -> None:
    llm_gateway, seen = gateway("0.85")
    judge = GroundednessJudge(1.0, llm_gateway)
    judgement = await judge.judge("How many days of leave?", answer("25 days [1].", 1), CONTEXTS)
    assert (judgement.score, judgement.judge) == (0.85, "llm")
    prompt = json.dumps(seen[0]["messages"])
    assert "25 days of paid leave" in prompt
    assert "Laptops" not in prompt
    await llm_gateway.aclose()


@pytest.mark.parametrize("reply", ["I think it is well supported.", None])
async def test_a_failing_or_wordy_model_falls_back_to_the_lexical_score(reply: str | None) -> None:
    llm_gateway, _ = gateway(reply)
    judge = GroundednessJudge(1.0, llm_gateway)
    judgement = await judge.judge(
        "How many days of leave?", answer("Employees get 25 days of paid leave [1].", 1), CONTEXTS
    )
    assert judgement.judge == "lexical"
    assert judgement.score == 1.0
    await llm_gateway.aclose()


async def test_sampled_answers_are_observed_in_the_background_and_abstentions_never() -> None:
    judge = GroundednessJudge(1.0)
    before = groundedness_count("lexical")
    judge.submit("How many days?", answer("Employees get 25 days of paid leave per year [1].", 1), CONTEXTS)
    judge.submit("Who?", answer("I could not find an answer.", abstained=True), CONTEXTS)
    await judge.drain()
    assert groundedness_count("lexical") == before + 1

    never = GroundednessJudge(0.0)
    never.submit("How many days?", answer("Employees get 25 days [1].", 1), CONTEXTS)
    await never.drain()
    assert groundedness_count("lexical") == before + 1


async def test_a_judge_that_fails_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    judge = GroundednessJudge(1.0)
    broken = [SearchHit(1, "d1", None, None, None, None, 1.0, {})]  # type: ignore[arg-type]  # text is None
    judge.submit("q", answer("Some text [1].", 1), broken)
    await judge.drain()
    assert "judging an answer's groundedness failed" in caplog.text
