#!/usr/bin/env bash
# Follow-up of the table: is class_balanced's low score (on BOTH splits) the identity-uniform
# sampling, or the P x K batch layout (16 identities x 4 images) that it shares with
# torchreid's RandomIdentitySampler? Two cells on the balanced control split, side by side
# (one torch thread each), same preset, seed and 8 epochs as the table:
#   pk_random_identity : softmax, torchreid's RandomIdentitySampler, 16 ids x 4 images
#   class_balanced_k1  : softmax, ClassBalancedSampler with num_instances 1 (64 ids x 1 image)
# Run from the repository root with the project venv active.
set -euo pipefail
SPLIT=balanced_control_long_tail_rho50
OUT=output/tables/sampler_check
mkdir -p "$OUT"
cell() {  # name, then config overrides
    local name=$1; shift
    cat > "$OUT/$name.yaml" <<YAML
_BASE_:
- $PWD/configs/methods/softmax.yaml
- $PWD/configs/market1501/splits/$SPLIT.yaml
- $PWD/configs/presets/cpu.yaml
YAML
    python tools/train_net.py --config-file "$OUT/$name.yaml" data.root datasets \
        data.save_dir "$OUT/$name" train.seed 1 train.max_epoch 8 "$@" > "$OUT/$name.log" 2>&1
}
cell pk_random_identity sampler.train_sampler RandomIdentitySampler sampler.num_instances 4 &
cell class_balanced_k1 sampler.train_sampler ClassBalancedSampler sampler.num_instances 1 &
wait
for name in pk_random_identity class_balanced_k1; do
    python - "$OUT/$name/final_metrics.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]["market1501"]
print(f"{sys.argv[1]}: rank-1 {100 * r['cmc'][0]:.1f}  mAP {100 * r['mAP']:.1f}  "
      f"train {d['train_seconds'] / 60:.1f} min  wall {d['wall_seconds'] / 60:.1f} min")
PY
done
