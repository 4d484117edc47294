"""An LLM judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, a local vLLM, ...).

MathVista and MathVerse are officially scored by VLMEvalKit with an LLM judge (it extracts the
answer from free text, and for MathVerse also decides whether it matches the gold answer). The
harness does not reimplement that: :func:`vlmeval_judge_env` points VLMEvalKit's own judge machinery
(``vlmeval.dataset.utils.judge_util.build_judge`` → ``vlmeval.api.OpenAIWrapper``) at the configured
endpoint for the duration of one ``dataset.evaluate(...)`` and restores the process environment after.

How VLMEvalKit 0.0.20 reaches the endpoint (read from its source, so the mapping is exact):

- ``OpenAIWrapper`` POSTs to ``api_base`` *as given* (no path appended), so the base URL a user passes
  (``http://host:8000/v1``, the OpenAI-client convention) becomes ``http://host:8000/v1/chat/completions``
  (:meth:`JudgeConfig.chat_url`); a URL already ending in ``/chat/completions`` is used as is.
- ``build_judge`` maps some short names to dated OpenAI names (``gpt-4o-mini`` →
  ``gpt-4o-mini-2024-07-18``) unless ``$LOCAL_LLM`` is set, in which case it sends ``$LOCAL_LLM``.
  We set ``LOCAL_LLM`` to the judge model, so the model name sent is exactly ``--judge-model``; the
  name VLMEvalKit sees (it names intermediate files after it) is the path-safe :data:`VLMEVAL_JUDGE_NAME`.
- The key goes as ``Authorization: Bearer KEY``. It is read from the environment variable the config
  names (``$HARNESS_JUDGE_API_KEY`` by default; a local vLLM without ``--api-key`` needs none) and
  passed explicitly, so VLMEvalKit's model-name-based choice of key variable (``grok`` →
  ``XAI_API_KEY``, ...) never applies. VLMEvalKit logs the key at INFO level when it builds the
  wrapper; that logger is raised to WARNING for the duration.
- Determinism: the first request for every item is sent with ``temperature=0``. VLMEvalKit retries an
  item whose reply is unusable with ``temperature=0.5, 1.0, ...`` (``MathVista_auxeval``); a judge
  that answers every request never sees those.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

log = logging.getLogger("harness")

DEFAULT_KEY_ENV = "HARNESS_JUDGE_API_KEY"
# The ``model`` VLMEvalKit's evaluate() sees: it only names intermediate files after it (a hub-style
# "org/name" would be read as a folder) and selects non-OpenAI wrappers for a few names we avoid.
VLMEVAL_JUDGE_NAME = "harness-judge"
_CHAT_PATH = "/chat/completions"
# Variables VLMEvalKit reads that would send the judge's requests elsewhere or with another model.
_OVERRIDING_VARS = ("BOYUE", "BOYUE_API_BASE", "BOYUE_API_KEY")


class JudgeError(ValueError):
    """The judge endpoint is unusable; the message names the URL and the fix."""


@dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    api_key_env: str = DEFAULT_KEY_ENV

    def __post_init__(self):
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--judge-url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.url!r}")
        if not self.model.strip():
            raise ValueError("--judge-model must name the model the endpoint serves (e.g. Qwen/Qwen2.5-72B-Instruct)")
        if "ernie" in self.model.lower():
            # OpenAIWrapper replaces the URL with Baidu's for any model name containing "ernie".
            raise ValueError(f"judge model {self.model!r}: VLMEvalKit sends every 'ernie' model to Baidu's API, "
                             "not to --judge-url; serve it under another name (vllm --served-model-name)")

    @property
    def base_url(self) -> str:
        url = self.url.rstrip("/")
        return url[: -len(_CHAT_PATH)] if url.endswith(_CHAT_PATH) else url

    def chat_url(self) -> str:
        """The URL chat-completion requests are POSTed to."""
        return self.base_url + _CHAT_PATH

    def scorer_name(self) -> str:
        """How score rows name this judge, e.g. ``judge:gpt-4o-mini@https://api.openai.com/v1``."""
        return f"judge:{self.model}@{self.base_url}"

    def vlmeval_env(self, nproc: int = 1):
        """The environment VLMEvalKit's judge reads, for the duration of a ``with`` (the ``Judge``
        protocol of :mod:`harness.api.benchmark`: benchmarks take a judge, never import this module)."""
        return vlmeval_judge_env(self, nproc)

    def api_key(self) -> str:
        """The key from ``$api_key_env``; empty when unset (servers started without a key accept that)."""
        return os.environ.get(self.api_key_env, "")

    def check(self, timeout: float = 30.0) -> None:
        """One deterministic chat request; a :class:`JudgeError` naming the URL and the fix if it fails.

        Run before anything expensive, so a wrong URL, model or key fails in a second instead of after
        VLMEvalKit's retries (5 tries × 5 attempts with sleeps in ``OpenAIWrapper.working``).
        """
        payload = {"model": self.model, "temperature": 0, "max_tokens": 8,
                   "messages": [{"role": "user", "content": "Reply with the word OK."}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key():
            headers["Authorization"] = f"Bearer {self.api_key()}"
        request = urllib.request.Request(self.chat_url(), data=json.dumps(payload).encode(), headers=headers,
                                         method="POST")
        where = f"LLM judge at {self.chat_url()}"
        try:
            with _no_proxy_for_loopback(self), urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in (401, 403):
                raise JudgeError(f"{where} rejected the API key (HTTP {exc.code}{detail}): put the key in "
                                 f"${self.api_key_env} (or name another variable with --judge-key-env)") from None
            if exc.code == 404:
                raise JudgeError(f"{where} answered HTTP 404{detail}: check that --judge-url is the API base "
                                 f"(e.g. http://HOST:PORT/v1) and that it serves model {self.model!r} "
                                 f"(GET {self.base_url}/models lists them)") from None
            raise JudgeError(f"{where} answered HTTP {exc.code}{detail}: check the server's log and "
                             f"that it serves model {self.model!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeError(f"{where} did not answer ({reason}): start an OpenAI-compatible server there "
                             f"(e.g. `vllm serve {self.model} --host 127.0.0.1 --port 8000`, then "
                             "--judge-url http://127.0.0.1:8000/v1) or fix --judge-url") from None
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"{where} did not answer in the OpenAI chat-completions format "
                             f"(got {body[:120]!r}): --judge-url must be an OpenAI-compatible API base") from None
        if not isinstance(content, str) or not content.strip():
            raise JudgeError(f"{where} returned an empty reply for model {self.model!r}; VLMEvalKit counts "
                             "empty replies as failures: check the server and the model")


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
        message = json.loads(text).get("error", {})
        text = message.get("message", text) if isinstance(message, dict) else str(message)
    except (ValueError, OSError, AttributeError):
        text = ""
    text = " ".join(text.split())[:160]
    return f": {text}" if text else ""


def _is_loopback(config: JudgeConfig) -> bool:
    return (urlsplit(config.url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def _patched_environ(values: dict[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _no_proxy_for_loopback(config: JudgeConfig):
    # VLMEvalKit hands $http_proxy/$https_proxy to requests explicitly, which skips $no_proxy: a judge
    # on this machine would be reached through the proxy. Remote judges keep the proxy settings.
    if not _is_loopback(config):
        return contextlib.nullcontext()
    return _patched_environ({name: None for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})


@contextlib.contextmanager
def vlmeval_judge_env(judge: JudgeConfig, nproc: int = 1) -> Iterator[dict]:
    """Point VLMEvalKit's judge at ``judge`` inside the block; yields the ``evaluate()`` keyword arguments.

    ``with vlmeval_judge_env(judge) as kwargs: dataset.evaluate(pred_file, **kwargs)``. The yielded
    dict holds the API key: pass it to VLMEvalKit, never store or log it. The environment variables
    and the VLMEvalKit logger level touched here are restored on exit, also after an error.
    """
    key = judge.api_key()
    values: dict[str, str | None] = {"OPENAI_API_BASE": judge.chat_url(), "OPENAI_API_KEY": key,
                                     "LOCAL_LLM": judge.model}
    values.update({name: None for name in _OVERRIDING_VARS})
    wrapper_log = logging.getLogger("vlmeval.api.gpt")  # logs "API Key: ..." at INFO
    level = wrapper_log.level
    kwargs = {"model": VLMEVAL_JUDGE_NAME, "nproc": nproc, "key": key, "api_base": judge.chat_url(),
              "temperature": 0, "verbose": False}
    with _patched_environ(values), _no_proxy_for_loopback(judge):
        wrapper_log.setLevel(logging.WARNING)
        try:
            yield kwargs
        finally:
            wrapper_log.setLevel(level)


def evaluate_with_judge(dataset, pred_file: str, judge: JudgeConfig, nproc: int = 1):
    """``dataset.evaluate(pred_file, ...)`` with VLMEvalKit's judge pointed at ``judge``."""
    with vlmeval_judge_env(judge, nproc=nproc) as kwargs:
        return dataset.evaluate(pred_file, **kwargs)


def add_judge_arguments(parser, url_help: str) -> None:
    """``--judge-url/--judge-model/--judge-key-env`` on a command (read back by :func:`judge_from_args`)."""
    parser.add_argument("--judge-url", help=url_help)
    parser.add_argument("--judge-model", help="the model the judge endpoint serves")
    parser.add_argument("--judge-key-env", default=DEFAULT_KEY_ENV, metavar="VAR",
                        help=f"environment variable holding the judge's API key (default: {DEFAULT_KEY_ENV})")


def judge_from_args(url: str | None, model: str | None, key_env: str | None) -> JudgeConfig | None:
    """The CLI's ``--judge-url/--judge-model/--judge-key-env`` as a config (None when no judge is asked for)."""
    if not url and not model:
        return None
    if not url or not model:
        raise ValueError("an LLM judge needs both --judge-url (an OpenAI-compatible API base, e.g. "
                         "http://127.0.0.1:8000/v1) and --judge-model")
    return JudgeConfig(url=url, model=model, api_key_env=key_env or DEFAULT_KEY_ENV)
