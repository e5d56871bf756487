#!/usr/bin/env bash
# Serve a walsmf export on a Vertex AI endpoint: upload the model, create an endpoint, deploy the model to it.
#
#   EXPORT=gs://BUCKET/wals/model/export/Servo/TIMESTAMP REGION=us-central1 \
#     IMAGE=REGION-docker.pkg.dev/PROJECT/walsmf/serve:1 cloud/vertex_deploy.sh            # walsmf.serve
#   EXPORT=... REGION=... cloud/vertex_deploy.sh prebuilt                                  # TF Serving
#
# walsmf (default): the container of cloud/Dockerfile.serve (Python 3.12, TensorFlow 2.21) runs walsmf.serve
#   (any instance form, Vertex parameters, answers trimmed to each instance's k).
# prebuilt: Vertex's TensorFlow 2.15 CPU prediction container (TF Serving), available until 2027-01-14 (no
#   patches since 2026-01-14): every instance must carry every input of the export's signature (docs/serving.md).
# Optional: NAME (display name, default wals), MACHINE (default n1-standard-2), MIN_REPLICAS, MAX_REPLICAS.
# Prints the endpoint; then: gcloud ai endpoints predict ENDPOINT --region $REGION --json-request request.json
set -euo pipefail
: "${EXPORT:?set EXPORT to the gs:// export directory (export/Servo/TIMESTAMP)}"
: "${REGION:?set REGION (e.g. us-central1)}"
NAME=${NAME:-wals}
case "${1:-walsmf}" in
  prebuilt) container=(--container-image-uri us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest) ;;
  walsmf)
    : "${IMAGE:?set IMAGE to the walsmf.serve image built from cloud/Dockerfile.serve}"
    container=(--container-image-uri "$IMAGE" --container-ports 8080 --container-predict-route /predict
               --container-health-route /health) ;;
  *) echo "error: unknown kind '$1': give walsmf (the default) or prebuilt" >&2; exit 2 ;;
esac
model=$(gcloud ai models upload --region "$REGION" --display-name "$NAME" --artifact-uri "$EXPORT" \
    "${container[@]}" --format 'value(model)')
echo "[1/3] model: $model" >&2
endpoint=$(gcloud ai endpoints create --region "$REGION" --display-name "$NAME" --format 'value(name)')
echo "[2/3] endpoint: $endpoint" >&2
gcloud ai endpoints deploy-model "${endpoint##*/}" --region "$REGION" --model "${model##*/}" \
    --display-name "$NAME" --machine-type "${MACHINE:-n1-standard-2}" \
    --min-replica-count "${MIN_REPLICAS:-1}" --max-replica-count "${MAX_REPLICAS:-2}" >&2
echo "[3/3] deployed" >&2
echo "${endpoint##*/}"
