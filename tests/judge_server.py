"""A small OpenAI-compatible judge server for the tests: real HTTP on 127.0.0.1, deterministic replies.

``with serve_judge() as url:`` starts a ``ThreadingHTTPServer`` on an ephemeral port and yields its
API base (``http://127.0.0.1:PORT/v1``). It speaks the parts of the OpenAI API that VLMEvalKit's
``OpenAIWrapper`` and :meth:`harness.run.judge.JudgeConfig.check` use: ``POST /v1/chat/completions``
(and ``GET /v1/models``, as vLLM serves it). Each request is recorded (``server.requests``) so tests
can check what was sent: path, headers, parsed JSON body.

Replies are computed from the prompt: by default :func:`perfect_judgement`, which does what a
perfect judge does with VLMEvalKit's MathVista / MathVerse judge prompts (read the model response
out of the prompt and extract its final answer; compare an extracted answer with the standard one).
``reply=`` takes a callable ``(prompt, body) -> str`` or a mapping ``prompt substring -> reply``.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, Mapping

_NUMBER = r"-?\d+(?:\.\d+)?"


def extract_final_answer(response: str) -> str:
    """The final answer a careful reader takes from a free-text response.

    An option letter wins when the response gives one: ``(B)``, "answer/option/result is B", or a lone
    letter ending the response; else the last number; else the stripped response itself.
    """
    text = response.strip()
    patterns = (r"\(([A-H])\)", r"\b(?:answer|option|choice|result)\s*(?:is|:)?\s*\(?([A-H])\b",
                r"(?:^|\s)([A-H])[.)]?$")
    found = [(m.start(), m.group(1)) for pattern in patterns for m in re.finditer(pattern, text, re.IGNORECASE)
             if m.group(1).isupper()]
    if found:
        return max(found)[1]
    numbers = re.findall(_NUMBER, text.replace(",", ""))
    if numbers:
        return numbers[-1]
    return text


def _same_answer(extracted: str, standard: str) -> bool:
    a, b = extracted.strip().rstrip("."), standard.strip().rstrip(".")
    if a.lower() == b.lower():
        return True
    try:
        return abs(float(a) - float(b)) < 1e-9
    except ValueError:
        return False


def perfect_judgement(prompt: str, body: dict | None = None) -> str:
    """What a perfect judge answers to VLMEvalKit's judge prompts (and to its ``hello`` liveness probe)."""
    # MathVista (vlmeval/dataset/utils/mathvista.py: build_mathvista_gpt4_prompt): the response
    # follows the last "Model respone: " (sic) and is closed by "Extracted answer:".
    if "Model respone: " in prompt and prompt.rstrip().endswith("Extracted answer:"):
        response = prompt.rsplit("Model respone: ", 1)[1].rstrip()[: -len("Extracted answer:")]
        return extract_final_answer(response)
    # MathVerse stage 2 (build_mathverse_gpt4_score_prompt): is [Model_answer] the [Standard Answer]?
    if prompt.rstrip().endswith("Grade:") and "[Standard Answer]:" in prompt:
        tail = prompt.rsplit("[Standard Answer]:", 1)[1]
        standard, model_answer = tail.split("[Model_answer] :", 1)
        model_answer = model_answer.rstrip()[: -len("Grade:")]
        return "1" if _same_answer(model_answer, standard) else "0"
    # MathVerse stage 1 (build_mathverse_gpt4_extract_prompt): "Model response: '...'\nExtracted Answer: ".
    if prompt.rstrip().endswith("Extracted Answer:") and "Model response: '" in prompt:
        response = prompt.rsplit("Model response: '", 1)[1].rstrip()[: -len("Extracted Answer:")].rstrip()
        return extract_final_answer(response[:-1] if response.endswith("'") else response)
    if prompt.strip().lower().startswith("reply with the word ok"):  # JudgeConfig.check
        return "OK"
    return "Hello! I am a test judge."  # VLMEvalKit's OpenAIWrapper.working() sends 'hello'


def _prompt_text(body: dict) -> str:
    """The last user message's text (string content, or the text parts of a content list)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(part.get("text", "") for part in content or [] if part.get("type") == "text")
    return ""


class JudgeServer(str):
    """The server's API base URL (a ``str``, so ``with serve_judge() as url`` reads naturally) plus the
    requests it received."""

    def __new__(cls, url: str, requests: list[dict]):
        server = super().__new__(cls, url)
        server.url, server.requests = url, requests
        return server

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def prompts(self) -> list[str]:
        return [_prompt_text(r["body"]) for r in self.chat_requests()]


@contextlib.contextmanager
def serve_judge(reply: Callable[[str, dict], str] | Mapping[str, str] | None = None, *,
                models: tuple[str, ...] | None = None, api_key: str | None = None,
                status: int | None = None) -> Iterator[JudgeServer]:
    """Run the judge server for the block; yields a :class:`JudgeServer`: the API base URL
    (``http://127.0.0.1:PORT/v1``), with ``.requests`` recorded.

    ``models``: if given, requests naming another model get vLLM's 404; ``api_key``: if given, requests
    without ``Authorization: Bearer API_KEY`` get 401; ``status``: answer every request with this
    HTTP error (a broken server).
    """
    if reply is None:
        answer = perfect_judgement
    elif callable(reply):
        answer = reply
    else:
        table = dict(reply)

        def answer(prompt: str, body: dict) -> str:
            hits = [value for key, value in table.items() if key in prompt]
            return hits[0] if hits else perfect_judgement(prompt, body)

    lock = threading.Lock()
    record: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str) -> None:
            self._send(code, {"error": {"message": message, "type": kind, "code": code}})

        def _authorised(self) -> bool:
            if api_key is None or self.headers.get("Authorization") == f"Bearer {api_key}":
                return True
            self._error(401, "Invalid API key", "authentication_error")
            return False

        def do_GET(self):
            with lock:
                record.append({"method": "GET", "path": self.path, "headers": dict(self.headers), "body": None})
            if status:
                return self._error(status, "server is broken (test)", "server_error")
            if not self._authorised():
                return
            if self.path.rstrip("/") == "/v1/models":
                names = models or ("test-judge",)
                return self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
            self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            with lock:
                record.append({"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body})
            if status:
                return self._error(status, "server is broken (test)", "server_error")
            if not self._authorised():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}", "not_found")
            if models is not None and body.get("model") not in models:
                return self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
            text = answer(_prompt_text(body), body)
            self._send(200, {
                "id": f"chatcmpl-{len(record)}", "object": "chat.completion", "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            })

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="judge-server", daemon=True)
    thread.start()
    server = JudgeServer(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests=record)
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
