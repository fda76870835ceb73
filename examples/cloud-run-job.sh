#!/usr/bin/env bash
# A Cloud Run Job of 16 tasks, one shard each (the shard comes from CLOUD_RUN_TASK_INDEX /
# CLOUD_RUN_TASK_COUNT), reading and writing a Cloud Storage bucket mounted at /data.
# The job's service account needs roles/aiplatform.user and access to the bucket.
set -euo pipefail
PROJECT=my-project REGION=us-central1 BUCKET=my-bucket
IMAGE=us-docker.pkg.dev/$PROJECT/images/batchrunner:latest   # python + pip install batchrunner

gcloud run jobs create batchrunner-score \
  --project "$PROJECT" --region "$REGION" --image "$IMAGE" \
  --tasks 16 --parallelism 16 --max-retries 3 --task-timeout 24h \
  --service-account "batchrunner@$PROJECT.iam.gserviceaccount.com" \
  --add-volume name=data,type=cloud-storage,bucket="$BUCKET" \
  --add-volume-mount volume=data,mount-path=/data \
  --command batchrunner \
  --args run,/data/prompts.parquet,-o,/data/out/scores.parquet,--project,"$PROJECT",--rpm,30000,--progress,log

gcloud run jobs execute batchrunner-score --project "$PROJECT" --region "$REGION" --wait

# Any machine that mounts the bucket (or the same image as a one-task job):
batchrunner merge /data/out/scores.parquet
