"""HTTP server: OpenAI-compatible /v1/chat/completions and /v1/completions (SSE streaming), legacy POST /chat,
/v1/models, /health and a chat web page at /. Concurrent requests are batched continuously (--batch_size rows) by
an engine in a process of its own (--engine_in_process keeps it in this one), restarted if it dies.

    python inference/llama_server.py --load_model_path model.bin --config_path models/llama/7b_config.json \
        --spm_model_path tokenizer.model --seq_length 2048 --batch_size 8 --port 8888
    curl -H 'Content-Type: application/json' http://127.0.0.1:8888/chat -d '{"question": "北京有什么好玩的地方？"}'
"""

from __future__ import annotations

import argparse
import functools

import torch

from tencentpretrain.cli import run
from tencentpretrain.generation.options import (
    add_inference_args,
    load_for_inference,
    load_tokenizer_and_model,
    load_tokenizer_for_inference,
    parse_inference_args,
    sampling_from_args,
)
from tencentpretrain.serving.app import ServerConfig
from tencentpretrain.serving.engine_process import RestartPolicy
from tencentpretrain.serving.server import build_app, build_app_with_engine_process, default_model_threads, serve
from tencentpretrain.tokenizers.templates import get_template


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8888, help="port to listen on")
    parser.add_argument("--api_key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--model_name", default="tencentpretrain", help="model id reported by /v1/models")
    parser.add_argument("--max_queue", type=int, default=64, help="requests that may wait; more get HTTP 429")
    parser.add_argument("--max_request_bytes", type=int, default=8 * 2**20,
                        help="larger request bodies get HTTP 413 without being read")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the model (default: all cores but one, which the HTTP side needs)")
    parser.add_argument("--max_engine_restarts", type=int, default=RestartPolicy.max_restarts,
                        help="restarts of a dead engine process allowed within 10 minutes; at the next death it "
                             "stays down (the server answers 503 and /health says 'failed')")
    parser.add_argument("--engine_in_process", action="store_true",
                        help="run the model in the server's process (a thread) instead of a process of its own")
    add_inference_args(parser, seq_length=2048, batch_size=8)
    args = parse_inference_args(parser, argv)
    threads = args.threads or default_model_threads()
    tokenizer = load_tokenizer_for_inference(args)
    config = ServerConfig(model_name=args.model_name, api_key=args.api_key, context_length=args.seq_length,
                          default_max_tokens=args.max_new_tokens or 256, defaults=sampling_from_args(args),
                          max_batch_size=args.batch_size, max_request_bytes=args.max_request_bytes,
                          default_stop=tuple(args.stop))
    template = get_template(args.prompt_template)
    if args.engine_in_process:
        torch.set_num_threads(threads)
        model = load_for_inference(args, tokenizer)
        app = build_app(model, tokenizer, template, config, max_queue=args.max_queue)
    else:
        app = build_app_with_engine_process(functools.partial(load_tokenizer_and_model, args), tokenizer, template,
                                            config, max_queue=args.max_queue, threads=threads,
                                            restart=RestartPolicy(max_restarts=args.max_engine_restarts))
    serve(app, args.host, args.port)


if __name__ == "__main__":
    run(main)
