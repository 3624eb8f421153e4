"""sentence-transformers' side of benches/embed_throughput.rs: texts/s at the
given batch sizes, same texts, same thread count. Prints one JSON line."""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, texts_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
batches = [int(b) for b in sys.argv[4].split(",")]
min_secs = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
torch.set_num_threads(threads)
texts = [json.loads(l)["text"] for l in open(texts_path, encoding="utf-8")]
model = SentenceTransformer(model_dir, device="cpu")
model.encode(texts[:64], batch_size=32)  # warm up
result = {}
for b in batches:
    done, start = 0, time.perf_counter()
    while True:
        model.encode(texts, batch_size=b, normalize_embeddings=True)
        done += len(texts)
        elapsed = time.perf_counter() - start
        if elapsed >= min_secs:
            break
    result[str(b)] = done / elapsed
print(json.dumps({"threads": threads, "texts_per_sec": result}))
