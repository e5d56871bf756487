#!/usr/bin/env bash
# Train walsmf.task as a Vertex AI custom job: the primary trains WALS, parameter servers hold the
# factor shards (Vertex names the primary "chief"; walsmf.task runs it as contrib.learn's master).
#   IMAGE=$REGION-docker.pkg.dev/$PROJECT/walsmf/trainer BUCKET=my-bucket REGION=us-central1 \
#       cloud/vertex_train.sh [--num_epochs=10 --num_row_shards=4 --num_col_shards=2 ...]
# PS=2 parameter servers by default (PS=0: the primary alone).  Worker pools go in Vertex's order:
# [primary, workers, parameter servers]; the workers' pool is empty: WALS trains on one replica.
set -euo pipefail
: "${IMAGE:?set IMAGE to the trainer image built from cloud/Dockerfile}"
: "${BUCKET:?set BUCKET to the bucket holding wals/data (gcloud storage cp -r data gs://BUCKET/wals/)}"
: "${REGION:?set REGION, e.g. us-central1}"
PS=${PS:-2}
args="--input_path=gs://$BUCKET/wals/data,--output_dir=gs://$BUCKET/wals/model"
for arg in "$@"; do args="$args,$arg"; done
pools=(--worker-pool-spec="machine-type=${MACHINE_TYPE:-n1-standard-8},replica-count=1,container-image-uri=$IMAGE")
if [ "$PS" -gt 0 ]; then
    pools+=(--worker-pool-spec= \
            --worker-pool-spec="machine-type=${PS_MACHINE_TYPE:-n1-highmem-4},replica-count=$PS,container-image-uri=$IMAGE")
fi
exec gcloud ai custom-jobs create --region "$REGION" --display-name "wals_$(date +%Y%m%d_%H%M%S)" \
    "${pools[@]}" --args="$args"
