"""torch.profiler over 30 class-conditional fit steps (digits-to-fashion's shape, batch 512),
set-up included: where a step's time goes, on a GPU where torch sees one.

    python benchmarks/gpu_profile_step.py > benchmarks/results/gpu_step-h100-profile.txt
"""

import torch
from torch.profiler import ProfilerActivity, profile

import hjtranslate as hjt

g = torch.Generator().manual_seed(0)
n = 20000
x = torch.randn(n, 64, generator=g)
y = torch.randn(n, 64, generator=g) * 0.7 + 0.5
k = torch.arange(n) % 10
hjt.fit(x, y, labels=(k, k), steps=5, batch_size=512, seed=0)  # warm-up
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
with profile(activities=activities) as prof:
    hjt.fit(x, y, labels=(k, k), steps=30, batch_size=512, seed=0)
table = prof.key_averages()
print(table.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
if torch.cuda.is_available():
    print(table.table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
for event in table:
    if "Synchronize" in event.key or event.key in ("aten::item", "aten::_local_scalar_dense"):
        print("SYNC", event.key, event.count, f"{event.cpu_time_total / 1000:.1f} ms")
