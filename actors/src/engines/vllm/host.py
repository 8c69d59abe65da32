"""troupe's vLLM engine host: one vLLM engine (`vllm.LLM`, engine core in this process) driven by
the rollout actor that started it.

Usage: python host.py SETTINGS_JSON

Requests arrive on stdin and answers leave on the original stdout, one JSON object per line, in
order. Everything else this process prints (vLLM's own logs included) goes to stderr, which the
actor keeps with its log. The host exits when stdin closes: the actor has gone.

Requests:
  {"op": "generate", "prompts": [[ids]], "seeds": [int], "temperature": f, "top_k": k|null,
   "top_p": p|null, "max_tokens": n, "stop_token_ids": [ids]}
      -> {"tokens": [[ids]], "logprobs": [[f]], "stopped": [bool], "version": v}
  {"op": "prompt_logprobs", "tokens": [ids]}   -> {"logprobs": [f]} (tokens 1.. given the rest)
  {"op": "load_weights", "path": DIR, "version": v} -> {"seconds": s, "version": v}
  {"op": "ping"} -> {"version": v}
Every answer has "ok": true, or "ok": false with "error". The first line is the start answer:
{"ok": true, "ready": true, "vllm": version, "start_s": s} or {"ok": false, "error": ...}.
"""

import json
import os
import shutil
import sys
import threading
import time
import traceback


def exit_with_parent(leftovers):
    """Ends this process when the actor that started it is gone (re-parented), whatever
    killed the actor, removing the files the actor would have removed."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            for path in leftovers:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.isfile(path):
                    os.remove(path)
            os._exit(0)


def main():
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def answer(value):
        answers.write(json.dumps(value) + "\n")
        answers.flush()

    settings = json.loads(sys.argv[1])
    threading.Thread(
        target=exit_with_parent, args=(settings.get("leftovers", []),), daemon=True
    ).start()
    started = time.time()
    try:
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        llm = LLM(
            model=settings["model"],
            skip_tokenizer_init=True,
            enforce_eager=settings.get("enforce_eager", True),
            dtype=settings.get("dtype", "float32"),
            max_model_len=settings["max_model_len"],
            seed=settings.get("seed", 0),
            # The log-probabilities of the distribution tokens were really drawn from
            # (temperature, top-k and top-p applied): the behaviour policy.
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=settings.get("gpu_memory_utilization", 0.5),
        )
        # The first generation pays for one-off set-up; pay it before saying ready.
        llm.generate(
            [TokensPrompt(prompt_token_ids=[0])],
            SamplingParams(max_tokens=2, detokenize=False),
            use_tqdm=False,
        )
    except BaseException as err:  # noqa: BLE001 - the reason goes back to the actor
        traceback.print_exc()
        answer({"ok": False, "error": f"{type(err).__name__}: {err}"})
        sys.exit(3)
    answer(
        {
            "ok": True,
            "ready": True,
            "vllm": vllm.__version__,
            "start_s": time.time() - started,
        }
    )

    version = 0

    def generate(request):
        params = []
        for seed in request["seeds"]:
            params.append(
                SamplingParams(
                    n=1,
                    temperature=request["temperature"],
                    top_k=request.get("top_k") or 0,
                    top_p=request.get("top_p") or 1.0,
                    max_tokens=request["max_tokens"],
                    stop_token_ids=request.get("stop_token_ids") or [],
                    seed=seed,
                    logprobs=0,
                    detokenize=False,
                    # Stop only where asked: the model's EOS is one of stop_token_ids or not.
                    ignore_eos=True,
                )
            )
        prompts = [TokensPrompt(prompt_token_ids=p) for p in request["prompts"]]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        tokens, logprobs, stopped = [], [], []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            tokens.append(ids)
            logprobs.append(
                [float(step[token].logprob) for step, token in zip(completion.logprobs, ids)]
            )
            stopped.append(completion.finish_reason == "stop")
        return {"tokens": tokens, "logprobs": logprobs, "stopped": stopped, "version": version}

    def prompt_logprobs(request):
        ids = request["tokens"]
        output = llm.generate(
            [TokensPrompt(prompt_token_ids=ids)],
            SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False),
            use_tqdm=False,
        )[0]
        values = []
        for step, token in zip(output.prompt_logprobs[1:], ids[1:]):
            values.append(float(step[token].logprob))
        return {"logprobs": values}

    def load_weights(request):
        nonlocal version
        begun = time.perf_counter()
        llm.collective_rpc("reload_weights", kwargs={"weights_path": request["path"]})
        version = int(request["version"])
        return {"seconds": time.perf_counter() - begun, "version": version}

    handlers = {
        "generate": generate,
        "prompt_logprobs": prompt_logprobs,
        "load_weights": load_weights,
        "ping": lambda _request: {"version": version},
    }
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            handler = handlers.get(request.get("op"))
            if handler is None:
                raise ValueError(f"unknown request op {request.get('op')!r}")
            reply = handler(request)
            reply["ok"] = True
        except Exception as err:  # noqa: BLE001 - the reason goes back to the actor
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        answer(reply)


if __name__ == "__main__":
    main()
