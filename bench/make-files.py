"""Writes COUNT files of 1-40 kB into DIR, half random bytes and half text, seeded by SEED."""
import os
import random
import sys

directory, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for i in range(count):
    sub = os.path.join(directory, f"d{i % 20:02d}")
    os.makedirs(sub, exist_ok=True)
    size = rng.randint(1_000, 40_000)
    if i % 2:
        data = rng.randbytes(size)
    else:
        words = [rng.choice(["etcd", "flannel", "node", "lease", "subnet", "10.1.0.0"]) for _ in range(size // 6)]
        data = " ".join(words).encode()[:size]
    with open(os.path.join(sub, f"f{i:04d}"), "wb") as f:
        f.write(data)
