#!/usr/bin/env bash
# Did a change alter what users get? Runs an earlier revision and the working tree on the same
# weights in fp32: lungseg predict on 5 test X-rays per source (masks compared byte for byte),
# then lungseg evaluate on the multi_source.json test subset (post-processed metrics compared).
#   scripts/compare_revisions.sh REV [WEIGHTS]   (WEIGHTS default: REV's shipped weights)
# Evaluate options of REV's time: an older REV scores post-processed masks with --postprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=$1
DATA=${LUNGSEG_DATA:-../shared/data}
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/tree" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
WEIGHTS=${2:-$WORK/weights.safetensors}
[ $# -ge 2 ] || git show "$REV:src/lungseg/weights/lungseg_cxr.safetensors" > "$WEIGHTS"
git worktree add -f "$WORK/tree" "$REV" -q
IMAGES=$(.venv/bin/python -c "
import json, sys
test = json.load(open(sys.argv[1]))['test']
ids = [i for s in ('montgomery', 'shenzhen', 'wingspan', 'covidqu') for i in [x for x in test if x.startswith(s)][:5]]
print(' '.join(f'{sys.argv[2]}/{i.split(\"/\")[0]}/images/{i.split(\"/\")[1]}.png' for i in ids))
" "$DATA/splits/multi_source.json" "$DATA")
OLD_FLAGS=$(PYTHONPATH="$WORK/tree/src" .venv/bin/python -m lungseg evaluate --help | grep -q -- "--no-postprocess" || echo --postprocess)
PYTHONPATH="$WORK/tree/src" .venv/bin/python -m lungseg predict $IMAGES -o "$WORK/old" --weights "$WEIGHTS" --quiet >/dev/null
.venv/bin/python -m lungseg predict $IMAGES -o "$WORK/new" --weights "$WEIGHTS" --precision fp32 --quiet >/dev/null
same=0; n=0
for f in "$WORK"/old/*_mask.png; do n=$((n + 1)); cmp -s "$f" "$WORK/new/$(basename "$f")" && same=$((same + 1)); done
echo "predict masks byte-identical: $same of $n"
SPLIT="$DATA/splits/multi_source.json"
PYTHONPATH="$WORK/tree/src" .venv/bin/python -m lungseg evaluate --data "$DATA" --split "$SPLIT" \
    --weights "$WEIGHTS" --json "$WORK/old.json" $OLD_FLAGS >/dev/null 2>&1
.venv/bin/python -m lungseg evaluate --data "$DATA" --split "$SPLIT" --weights "$WEIGHTS" \
    --json "$WORK/new.json" --precision fp32 >/dev/null 2>&1
.venv/bin/python - "$WORK/old.json" "$WORK/new.json" <<'PY'
import json, sys
old, new = (json.load(open(p)) for p in sys.argv[1:3])
keys = ["n", "dice", "iou", "accuracy", "precision", "recall", "specificity", "hd95", "assd"]
print("evaluate metrics identical:", all(old[k] == new[k] for k in keys),
      "per source identical:", old["per_source"] == new["per_source"])
PY
