"""Time ``peal-sk project ls-backend`` on a large pool: the start (model and ranking of the
pool by the strategy) and a ``/predict`` of 100 tasks, on cached embeddings.

The embeddings cache is stood in for by fixed random 1280-d rows per image (what
EfficientNet-Lite0 gives; a cache hit costs a file read), so the time measured is the
backend's: the model fit, the strategy's ranking and the answer.

    python benchmarks/bench_ls_backend.py --n-images 10000 --strategy entropy
    python benchmarks/bench_ls_backend.py --n-images 10000 --labels 0   # cold start (bilaf)
"""

import argparse
import base64
import json
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=10000)
    parser.add_argument("--labels", type=int, default=60, help="labels before the start")
    parser.add_argument("--strategy", default="entropy")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--rank-depth", type=int, default=1000)
    args = parser.parse_args()

    from peal_sk.project import _embed_cache, init_project
    from peal_sk.project._labelstudio import label_config
    from peal_sk.project._ls_backend import LabelStudioBackend

    classes = ["a", "b", "c"]

    def cached(rows, **kwargs):  # a cache hit: fixed rows per image
        return np.stack(
            [
                np.random.default_rng(zlib.crc32(r["relpath"].encode())).normal(size=args.dim)
                for r in rows
            ]
        ).astype(np.float32)

    _embed_cache.embeddings = cached
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        data = buf.getvalue()
        for i in range(args.n_images):
            (images / f"{i:06d}.png").write_bytes(data)
        proj, _ = init_project(Path(tmp) / "p", images, classes, strategy=args.strategy)
        names = sorted(p.name for p in images.iterdir())
        proj.import_records([(n, classes[k % 3]) for k, n in enumerate(names[: args.labels])])
        proj.close()
        start = time.perf_counter()
        server = LabelStudioBackend(
            Path(tmp) / "p", port=0, password="pw", rank_depth=args.rank_depth
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        t_start = time.perf_counter() - start
        tasks = [
            {"id": k, "data": {"image": f"/data/local-files/?d=images/{n}"}}
            for k, n in enumerate(names[args.labels : args.labels + 100])
        ]
        body = json.dumps({"tasks": tasks, "label_config": label_config(classes)}).encode()
        auth = "Basic " + base64.b64encode(b"peal-sk:pw").decode()
        req = urllib.request.Request(
            server.url + "/predict",
            body,
            {"Authorization": auth, "Content-Type": "application/json"},
        )
        start = time.perf_counter()
        with urllib.request.urlopen(req) as resp:
            results = json.loads(resp.read())["results"]
        t_predict = time.perf_counter() - start
        server.shutdown()
        server.server_close()
    print(
        json.dumps(
            {
                "n_images": args.n_images,
                "labels": args.labels,
                "strategy": results[0]["model_version"],
                "rank_depth": args.rank_depth,
                "start_s": round(t_start, 2),
                "predict_100_s": round(t_predict, 3),
                "total_s": round(t_start + t_predict, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
