"""LLM providers behind the LlmProvider port, and the router that picks one per model."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from agentgraph.core.errors import LlmError, LlmNotConfigured
from agentgraph.core.llm_port import LlmProvider, LlmRequest, LlmResponse, OnPartial
from agentgraph.core.names import ENV_MAX_CONCURRENCY


def base_model(model: str) -> str:
    """The model family name without a stub's fault suffix (`gemini-2.5-flash~fail=2x429`)."""
    return model.split("~", 1)[0]


class LlmRouter:
    """Routes each call to the first provider that supports the model, with an optional
    cap on simultaneous calls per model (quota protection in the local backend)."""

    def __init__(
        self, providers: Sequence[LlmProvider], max_concurrency: Mapping[str, int] | None = None
    ) -> None:
        self.providers = list(providers)
        self._limits = dict(max_concurrency or {})
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def supports(self, model: str) -> bool:
        return any(p.supports(model) for p in self.providers)

    def check_models(self, models: Iterable[str]) -> None:
        """Fail before a run starts if a provider it needs is not configured (a missing
        API key), rather than on the first node that calls it; then let each provider
        the run needs get ready (`prepare`: Gemini's worker processes start here, not on
        the run's first call, which every other call of the first layer would wait for)."""
        providers = [self._provider(model) for model in sorted(set(models))]
        for provider in providers:
            check = getattr(provider, "check", None)
            if check is not None:
                check()
        for provider in dict.fromkeys(providers):
            prepare = getattr(provider, "prepare", None)
            if prepare is not None:
                prepare()

    def _provider(self, model: str) -> LlmProvider:
        for provider in self.providers:
            if provider.supports(model):
                return provider
        raise LlmError(f"no provider for model {model!r}", type="UnknownModel", retryable=False)

    def _semaphore(self, model: str) -> asyncio.Semaphore | None:
        family = base_model(model)
        limit = self._limits.get(family, self._limits.get("*"))
        if limit is None:
            return None
        if family not in self._semaphores:
            self._semaphores[family] = asyncio.Semaphore(limit)
        return self._semaphores[family]

    async def aclose(self) -> None:
        """Release what the providers hold (connection pools, worker processes)."""
        for provider in self.providers:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        provider = self._provider(request.model)
        semaphore = self._semaphore(request.model)
        if semaphore is None:
            return await provider.generate(request, on_partial)
        async with semaphore:
            return await provider.generate(request, on_partial)


class _GeminiOnDemand:
    """Creates the Gemini provider on first use, so graphs that only use `echo` (the
    offline demo, most tests) need neither the SDK configured nor an API key."""

    def __init__(
        self,
        processes: int = 0,
        loading: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
    ) -> None:
        self._provider: LlmProvider | None = None
        self._processes = processes  # worker processes for SDK calls (llm/sdk_pool.py)
        self._loading = loading or contextlib.nullcontext  # around importing the SDK

    def supports(self, model: str) -> bool:
        return base_model(model).startswith("gemini-")

    def get(self) -> LlmProvider:
        if self._provider is None:
            with self._loading():
                from agentgraph.llm.gemini import GeminiConfigError, GeminiProvider

                try:
                    self._provider = GeminiProvider.from_env(processes=self._processes)
                except GeminiConfigError as exc:
                    raise LlmNotConfigured(str(exc)) from exc
        return self._provider

    def check(self) -> None:
        self.get()

    def prepare(self) -> None:
        start = getattr(self.get(), "start_workers", None)
        if start is not None:
            start()

    async def aclose(self) -> None:
        close = getattr(self._provider, "aclose", None)
        if close is not None:
            await close()

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        return await self.get().generate(request, on_partial)


def parse_concurrency(spec: str) -> dict[str, int]:
    """`gemini-2.5-pro=4,*=16` → {"gemini-2.5-pro": 4, "*": 16} ("*": every other model)."""
    limits: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        model, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise ValueError(
                f"max concurrency {item!r}: expected MODEL=N with N >= 1, e.g. gemini-2.5-pro=4"
            )
        limits[model.strip()] = int(number)
    return limits


# Simultaneous calls per model unless told otherwise: the guard that lets the local
# runtime run many nodes at once (quotas are per model) without sending a whole wide
# layer of agents to one model at the same instant.
DEFAULT_MAX_CONCURRENCY: Mapping[str, int] = {"*": 32}


def default_router(
    max_concurrency: Mapping[str, int] | None = None,
    gemini_processes: int = 0,
    loading: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
) -> LlmRouter:
    """echo (offline) and Gemini. Per-model caps come from the argument, else from
    AGENTGRAPH_MAX_CONCURRENCY (`gemini-2.5-pro=4,*=16`), over DEFAULT_MAX_CONCURRENCY:
    a model named there keeps its own cap, `*` replaces the default for the rest.
    Gemini's SDK calls run in `gemini_processes` worker processes (0: in this one)
    unless AGENTGRAPH_GEMINI_PROCESSES says otherwise. `loading` wraps the import of
    google-genai when a run first needs it (the CLI's turns the collector off for it:
    `cli_loading.py`)."""
    from agentgraph.llm.echo import EchoProvider

    if max_concurrency is None:
        max_concurrency = parse_concurrency(os.environ.get(ENV_MAX_CONCURRENCY, ""))
    return LlmRouter(
        [EchoProvider(), _GeminiOnDemand(gemini_processes, loading)],
        {**DEFAULT_MAX_CONCURRENCY, **max_concurrency},
    )
